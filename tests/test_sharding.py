"""Sharded data parallel (compute.sharding, train/sharding.py) for real: `accelerate launch` with two CPU processes
(gloo) trains a DiT stage sharded with FSDP2, ZeRO-2 (`grads_optimizer`) and ZeRO-3 (`full`), and gives the loss
trace, the final EMA weights (final/, one save_pretrained folder) and the ledger's work of one unsharded process
computing the same global batch (ZeRO-3 with activation checkpointing on). A sharded job killed with SIGKILL resumes
to the uninterrupted sharded run, and its checkpoint (full state dicts) resumes on one process too, checkpointing
off. Reuses the smoke workflow's latents and caption cache.

Tolerances: the sharded runs reduce gradients in another order (a reduce-scatter over two processes instead of one
process's sum) and Adam's first steps divide by tiny second moments, so they agree with the unsharded run to
rel 1e-4 / abs 1e-6 (losses) and abs 1e-5 (weights); a resumed run on the same processes agrees with the
uninterrupted one to rel 1e-6 / abs 1e-7 (losses) and abs 1e-7 (weights): the same arithmetic from the same
state."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from conftest import kill_after_first_checkpoint
from safetensors.torch import load_file
from test_data_parallel import _launch, _run

STEPS = 10
# a video stage alone (a fresh model): 2 micro-batches of 2 clips per optimizer step, one per process
DIT_STAGE = ("train.curriculum=[{name: video_lowres, kind: video, height: 16, width: 16, frames: 9, "
             f"steps: {STEPS}, batch_size: 4, micro_batch_size: 2}}]")


def _dit(base: Path, out: Path, processes: int, sharding: str, checkpointing: float = 0.0) -> list[str]:
    return [*_launch(processes), "train-dit", "--profile", "smoke", "--experiment", "pyramid",
            "--stage", "video_lowres", "--threads", "1", "--out", str(out), "--set", f"results={base}/results",
            "--set", DIT_STAGE, "--set", "train.fid_every=5", "--set", "train.ckpt_every=2",
            "--set", "compute.device=cpu", "--set", f"compute.sharding={sharding}",
            "--set", f"train.activation_checkpointing={checkpointing}"]


def _trace(out: Path) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(out / "train_log.csv"))]


def _ledger(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "ledger.csv")))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    (f,) = folder.glob("*.safetensors")
    return load_file(f)


def _assert_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


@pytest.mark.timeout(900)
def test_sharded_dit_stage_equals_unsharded_and_resumes(smoke_run: Path, tmp_path: Path):
    from pyramid_repro.models import load_dit

    ref, zero2, zero3, killed = (tmp_path / n for n in ("ref", "zero2", "zero3", "killed"))
    _run(_dit(smoke_run, ref, 1, "none"))
    _run(_dit(smoke_run, zero2, 2, "grads_optimizer"))
    _run(_dit(smoke_run, zero3, 2, "full", checkpointing=1.0))  # with activation checkpointing in the FSDP units
    a = _trace(ref)
    assert len(a) == STEPS
    final_ref = _weights(ref / "final")
    for run in (zero2, zero3):
        assert _trace(run) == pytest.approx(a, rel=1e-4, abs=1e-6), run.name
        # final/: the EMA weights, gathered from the shards into one diffusers folder that loads as ever
        _assert_weights(_weights(run / "final"), final_ref, atol=1e-5)
        assert (run / "final" / "config.json").read_text() == (ref / "final" / "config.json").read_text()
        load_dit(run / "final")
        assert sorted(p.name for p in (run / "fid_snapshots").iterdir()) == ["step_10", "step_5"]
        # the ledger counts the same work as unsharded, once
        (row,), (row_ref,) = _ledger(run), _ledger(ref)
        assert row["device_count"] == "2"
        for key in ("samples", "tokens", "flops"):
            assert float(row[key]) == pytest.approx(float(row_ref[key])), key
        assert int(row["samples"]) == STEPS * 4

    # killed (SIGKILL) after its first checkpoint, the ZeRO-3 job resumes to the uninterrupted ZeRO-3 run; its
    # checkpoint (full state dicts) resumes on one process too
    kill_after_first_checkpoint(_dit(smoke_run, killed, 2, "full", 1.0), killed / "checkpoints")
    left = max(int(p.stem.split("_")[1]) for p in (killed / "checkpoints").glob("step_*.pt"))
    assert left < STEPS, "the job finished before it could be killed"
    on_one = tmp_path / "killed_on_one"
    shutil.copytree(killed, on_one)
    _run(_dit(smoke_run, killed, 2, "full", 1.0))
    assert _trace(killed) == pytest.approx(_trace(zero3), rel=1e-6, abs=1e-7)
    _assert_weights(_weights(killed / "final"), _weights(zero3 / "final"), atol=1e-7)
    rows = _ledger(killed)
    assert int(rows[-1]["resumed_from_step"]) == left and rows[-1]["status"] == "ok"
    _run(_dit(smoke_run, on_one, 1, "full"))  # and checkpointing off: neither is in the checkpoint fingerprint
    assert int(_ledger(on_one)[-1]["resumed_from_step"]) == left
    assert _trace(on_one) == pytest.approx(a, rel=1e-4, abs=1e-6)
    _assert_weights(_weights(on_one / "final"), final_ref, atol=1e-5)
