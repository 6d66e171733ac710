"""Live training curves (train/curves.py): the TensorBoard event files of a training job hold its loss trace at
the same steps, with the learning rate, gradient norm and throughput; a resumed job continues the same curves;
without the tensorboard package training runs the same and one line says the curves are off. Reuses the smoke
workflow's dataset, VAE and latents."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from pyramid_repro.config import load_config
from pyramid_repro.layout import Layout
from pyramid_repro.train.curves import CURVES_OFF
from pyramid_repro.train.loop import lr_lambda

# TensorBoard stores scalars as float32: the curve equals the float64 trace to float32 rounding
F32 = dict(rel=1e-6, abs=1e-12)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the event files in `folder`, as TensorBoard shows them (a resumed job's
    purge applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def trace(folder: Path) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(open(folder / "train_log.csv"))]


def _same_curve(curve: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [s for s, _ in curve] == [s for s, _ in expected]
    assert [v for _, v in curve] == pytest.approx([v for _, v in expected], **F32)


def test_smoke_run_curves_hold_the_loss_trace(smoke_run: Path):
    """Every DiT stage of the smoke workflow and its VAE: the event file's loss is train_log.csv's at the same
    steps; lr (the schedule's), gradient norm and samples/s at every step too; no MFU on the CPU."""
    cfg = load_config("smoke", {"results": f"{smoke_run}/results"})
    stages = sorted(cfg.layout.results.glob("*/dit/*/train_log.csv"))
    assert stages, "the smoke workflow trained no DiT stage"
    for log in stages:
        folder = log.parent
        curves = scalars(Layout.curves(folder))
        _same_curve(curves["loss"], trace(folder))
        steps = [s for s, _ in curves["loss"]]
        schedule = lr_lambda(cfg.train.warmup_steps)
        _same_curve(curves["lr"], [(s, cfg.train.lr * schedule(s - 1)) for s in steps])
        for tag in ("grad_norm", "samples_per_second", "tokens_per_second"):
            assert [s for s, _ in curves[tag]] == steps, (folder, tag)
            assert all(v > 0 for _, v in curves[tag]), (folder, tag)
        assert "mfu" not in curves
    vae = scalars(cfg.layout.vae_curves())
    _same_curve(vae["loss"], trace(cfg.layout.vae()))
    parts = [r for r in csv.DictReader(open(cfg.layout.vae() / "train_log.csv"))]
    assert [v for _, v in vae["loss_parts/mse"]] == pytest.approx([float(r["mse"]) for r in parts], **F32)
    assert {"lr", "grad_norm", "samples_per_second"} <= set(vae)


def _stage(smoke_run: Path, steps: int) -> tuple:
    """The smoke profile with one short image stage, no gradient clipping (the norm is then measured apart from
    the update) and a checkpoint every 2 steps."""
    cfg = load_config("smoke", {"results": f"{smoke_run}/results",
                                "train": {"fid_every": 0, "grad_clip": 0.0, "ckpt_every": 2,
                                          "curriculum": [{"name": "image", "kind": "image", "height": 16,
                                                          "width": 16, "frames": 1, "steps": steps,
                                                          "batch_size": 4}]}}, "pyramid")
    return cfg, cfg.train.curriculum[0].name


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "final" / "diffusion_pytorch_model.safetensors")


def test_curves_change_no_number_continue_on_resume_and_are_optional(smoke_run: Path, tmp_path: Path,
                                                                      monkeypatch, capsys):
    from pyramid_repro.train.checkpoint import checkpoint_path
    from pyramid_repro.train.dit import train_stage

    steps = 8
    cfg, stage = _stage(smoke_run, steps)
    full = train_stage(cfg, "pyramid", stage, tmp_path / "full")
    curves = scalars(Layout.curves(full))
    _same_curve(curves["loss"], trace(full))
    assert len(curves["grad_norm"]) == steps and all(v > 0 for _, v in curves["grad_norm"])

    # a job killed after step 6 whose last checkpoint is step 4: the resumed job trains steps 5.. again, and the
    # curves show each step once, with the resumed job's values
    cut = tmp_path / "resumed"
    train_stage(cfg, "pyramid", stage, cut, max_steps=6)
    checkpoint_path(cut / "checkpoints", 6).unlink()
    capsys.readouterr()
    train_stage(cfg, "pyramid", stage, cut)
    assert "resuming pyramid/image from step 4" in capsys.readouterr().out
    assert len(list(Layout.curves(cut).glob("events.out.tfevents.*"))) == 2
    resumed = scalars(Layout.curves(cut))
    assert trace(cut) == trace(full)
    for tag in ("loss", "lr", "grad_norm"):
        _same_curve(resumed[tag], curves[tag])

    # without the tensorboard package: one line, no event files, and the same run to the bit
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    off = train_stage(cfg, "pyramid", stage, tmp_path / "off")
    out = capsys.readouterr().out
    assert out.count(CURVES_OFF) == 1, out
    assert not Layout.curves(off).exists()
    assert trace(off) == trace(full)
    a, b = _weights(full), _weights(off)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
