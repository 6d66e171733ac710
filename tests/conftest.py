"""Shared fixtures. Tests run on CPU, offline, from the repository root."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import signal
import subprocess
import sys
import time

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYRAMID_REPRO_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def snakemake(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYRAMID_REPRO_ROOT": str(ROOT)})


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The whole workflow on the smoke profile, into a temporary results/ and reports/ folder (the smoke profile's
    reports are <reports>/smoke/: only the default profile's go to <reports>/ itself)."""
    base = tmp_path_factory.mktemp("smoke")
    args = ["--cores", "2", "--config", "profile=smoke", f"results={base}/results", f"reports={base}/reports"]
    r = snakemake(*args, "--", f"{base}/reports/smoke/table1.pdf")
    log = (r.stdout + r.stderr)[-8000:]
    assert r.returncode == 0, log
    return base




def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children first found first."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def kill_after_first_checkpoint(cmd: list[str], checkpoints: Path, timeout: float = 300) -> None:
    """Start a training command and SIGKILL it as soon as a checkpoint file appears (a real crash, no clean
    shutdown), for the resume == uninterrupted tests: its process group and every process below it (torchrun, under
    `accelerate launch`, starts each worker in a session of its own, which the group kill would miss: the workers
    would finish the job)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < timeout and not (checkpoints.exists() and any(checkpoints.glob("step_*.pt"))):
        time.sleep(0.02)
    below = _descendants(p.pid)  # before the kill: orphans are re-parented and no longer found
    os.killpg(p.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    p.wait()
