"""The workflow through a real SLURM scheduler: the smoke profile via `workflows/profiles/slurm`, every job an
`sbatch` submission, the DiT training jobs with two data-parallel processes on the one node.

Slow (about 10 minutes plus about a minute of package installs on a fresh machine): `pytest -m slow
tests/test_slurm.py`. Needs a running SLURM with accounting; as root on Debian 12 the test sets one up itself with
tests/slurm/setup_single_node.sh (packages from the Debian mirrors). Elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "tests" / "slurm" / "setup_single_node.sh"
# what the setup script creates (the same variables choose them there); on another cluster set them to yours
ACCOUNT = os.environ.get("SLURM_TEST_ACCOUNT", "test")
PARTITION = os.environ.get("SLURM_TEST_PARTITION", "gpu")

pytestmark = pytest.mark.slow


def _node_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return r.returncode == 0 and any(s.startswith(("idle", "mixed", "allocated")) for s in r.stdout.split())


@pytest.fixture(scope="module")
def slurm() -> None:
    if _node_up() and shutil.which("sacct"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no running SLURM, and setting one up needs root on Debian (tests/slurm/setup_single_node.sh)")
    r = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"SLURM setup failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert _node_up(), subprocess.run(["sinfo"], capture_output=True, text=True).stdout


def test_smoke_workflow_runs_through_sbatch(slurm, tmp_path):
    # from another directory (results/, reports/ and .snakemake/slurm_logs/ go there), partition and account as a
    # user sets them; every train_dit job: two processes (accelerate, gloo) on two CPUs of the one node
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--profile", str(ROOT / "workflows" / "profiles" / "slurm"),
           "--config", "profile=smoke", f"compute={{account: {ACCOUNT}, partition: {PARTITION}}}",
           "--set-resources", "train_dit:processes_per_node=2", "train_dit:cpus_per_task=2",
           "--", "reports/smoke/table1.pdf"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=2400,
                       env={**os.environ, "PYRAMID_REPRO_ROOT": str(ROOT)})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]

    # every report written
    for name in ("table1.pdf", "table1.csv", "gpu_hours.pdf", "fid_convergence.pdf"):
        assert (tmp_path / "reports" / "smoke" / name).stat().st_size > 0, name

    # every job went through sbatch: one SLURM log per job, and accounting knows each as COMPLETED
    logs = sorted((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    jobs = {p.stem for p in logs}
    trained = {p.parent.name for p in logs if p.parts[-3] == "rule_train_dit"}
    assert len(logs) >= 30 and len(trained) >= 10, [str(p.relative_to(tmp_path)) for p in logs]
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(sorted(jobs))],
                          capture_output=True, text=True).stdout.split()
    states = dict(line.split("|") for line in acct)
    assert set(states) == jobs and set(states.values()) == {"COMPLETED"}, states

    # the partition and account the profile asked for
    used = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "Partition,Account", "-j", ",".join(sorted(jobs))],
                          capture_output=True, text=True).stdout.split()
    assert set(used) == {f"{PARTITION}|{ACCOUNT}"}, set(used)

    # the training jobs ran two processes: the ledger counts two devices, once per job
    ledger = tmp_path / "results" / "smoke" / "pyramid" / "dit" / "video_highres" / "ledger.csv"
    rows = list(csv.DictReader(ledger.open()))
    assert rows and {row["device_count"] for row in rows} == {"2"}, rows
