"""Data parallel for real: `accelerate launch` with two CPU processes (gloo) trains a DiT stage and the VAE with
the same loss trace as one process computing the same global batch; only the main process writes checkpoints,
ledger rows and FID snapshots, the ledger counts the global batch once, and a two-process run killed mid-way resumes
to the uninterrupted trace. Reuses the smoke workflow's dataset, VAE, latents and probe."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_after_first_checkpoint

STEPS = 12
# a video stage alone (a fresh model): micro-batches draw different pyramid stages, frames and histories, so
# sharing them out among processes is exercised; 2 micro-batches of 2 clips per optimizer step
DIT_STAGE = ("train.curriculum=[{name: video_lowres, kind: video, height: 16, width: 16, frames: 9, "
             f"steps: {STEPS}, batch_size: 4, micro_batch_size: 2}}]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "pyramid_repro.cli"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(_free_port()), "-m", "pyramid_repro.cli"]


def _dit(base: Path, out: Path, processes: int) -> list[str]:
    return [*_launch(processes), "train-dit", "--profile", "smoke", "--experiment", "pyramid",
            "--stage", "video_lowres", "--threads", "1", "--out", str(out), "--set", f"results={base}/results",
            "--set", DIT_STAGE, "--set", "train.fid_every=6", "--set", "train.ckpt_every=4",
            "--set", "compute.device=cpu"]


def _vae(base: Path, out: Path, processes: int) -> list[str]:
    return [*_launch(processes), "train-vae", "--profile", "smoke", "--threads", "1", "--out", str(out),
            "--set", f"results={base}/results", "--set", f"vae.train.steps={STEPS}", "--set", "vae.train.batch_size=4",
            "--set", "vae.train.micro_batch_size=2", "--set", "vae.train.ckpt_every=4", "--set", "compute.device=cpu"]


def _run(cmd: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYRAMID_REPRO_OVERRIDES"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]


def _trace(out: Path) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(out / "train_log.csv"))]


def _ledger(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "ledger.csv")))


@pytest.mark.timeout(900)
def test_two_process_dit_stage_equals_one_process_and_resumes(smoke_run: Path, tmp_path: Path):
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    _run(_dit(smoke_run, one, 1))
    _run(_dit(smoke_run, two, 2))
    a, b = _trace(one), _trace(two)
    assert len(a) == len(b) == STEPS
    assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    # the main process alone wrote one ledger row, one FID curve, one set of checkpoints; the work counted once
    (row1,), (row2,) = _ledger(one), _ledger(two)
    assert row2["device_count"] == "2" and row1["device_count"] == "1"
    for key in ("samples", "tokens", "flops"):
        assert float(row2[key]) == pytest.approx(float(row1[key])), key
    assert int(row2["samples"]) == STEPS * 4
    # one set of FID snapshots (the EMA weights at the FID-point steps), the same compute counted in each
    snaps1, snaps2 = ({p.name: json.loads((p / "fid_point.json").read_text()) for p in (o / "fid_snapshots").iterdir()}
                      for o in (one, two))
    assert sorted(snaps2) == sorted(snaps1) == ["step_12", "step_6"]
    for name in snaps1:
        for key in ("step", "samples_seen", "tokens_seen", "flops"):
            assert snaps2[name][key] == pytest.approx(snaps1[name][key]), (name, key)
    assert sorted(p.name for p in (two / "checkpoints").glob("step_*.pt")) == \
        sorted(p.name for p in (one / "checkpoints").glob("step_*.pt"))
    # killed after its first checkpoint, the two-process job resumes to the uninterrupted trace
    kill_after_first_checkpoint(_dit(smoke_run, killed, 2), killed / "checkpoints")
    assert not (killed / "done.json").exists(), "the job finished before it could be killed"
    _run(_dit(smoke_run, killed, 2))
    assert _trace(killed) == pytest.approx(b, rel=1e-5, abs=1e-7)
    rows = _ledger(killed)
    assert int(rows[-1]["resumed_from_step"]) > 0 and rows[-1]["status"] == "ok"


@pytest.mark.timeout(900)
def test_two_process_vae_equals_one_process(smoke_run: Path, tmp_path: Path):
    one, two = tmp_path / "vae1", tmp_path / "vae2"
    _run(_vae(smoke_run, one, 1))
    _run(_vae(smoke_run, two, 2))
    a, b = _trace(one), _trace(two)
    assert len(a) == len(b) == STEPS
    assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    (row1,), (row2,) = _ledger(one), _ledger(two)
    assert row2["device_count"] == "2" and row2["samples"] == row1["samples"] == str(STEPS * 4)
    assert (two / "final" / "normalization.json").is_file()
