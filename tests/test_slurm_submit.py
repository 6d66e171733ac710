"""A submission that sbatch refuses, without a cluster: fake `sbatch` (fails as SLURM does on an unknown partition)
and fake accounting commands on PATH, the real workflow and the real SLURM executor plugin. Snakemake's own error
points at the rule's log, which is empty because the job never ran; the workflow's `onerror` hook must say why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pyramid_repro.workflow import explain_failed_submissions

ROOT = Path(__file__).resolve().parents[1]

FAKE_SBATCH = """#!/bin/sh
echo "sbatch: error: invalid partition specified: nosuch" >&2
exit 1
"""


def test_refused_sbatch_is_explained_not_pointed_at_an_empty_log(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "sbatch").write_text(FAKE_SBATCH)
    for name in ("sinfo", "squeue", "sacct", "sacctmgr", "sshare", "scontrol"):
        (bin_ / name).write_text("#!/bin/sh\nexit 0\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(run),
           "--profile", str(ROOT / "workflows" / "profiles" / "slurm"), "--config", "profile=smoke",
           "compute={partition: nosuch, account: test}", "--", "reports/smoke/table1.pdf"]
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "PYRAMID_REPRO_ROOT": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "SLURM sbatch failed" in out, out[-3000:]  # the executor did try (and the fake refused)
    tail = out[out.index("Exiting because a job execution failed"):]
    assert "sbatch refused 1 job submission(s)" in tail, tail
    assert "'sbatch: error: invalid partition specified: nosuch'  (rules: make_dataset)" in tail
    assert "compute.partition / compute.account" in tail
    # the job never ran: its rule log is indeed absent, as the message says
    assert not (run / "results" / "smoke" / "logs" / "make_dataset.log").exists() or \
        not (run / "results" / "smoke" / "logs" / "make_dataset.log").read_text().strip()


def test_explanation_is_silent_when_no_submission_failed(tmp_path):
    log = tmp_path / "run.snakemake.log"
    log.write_text("Error in rule score:\n    message: None\n    log: results/tiny/logs/score/x.log (check log "
                   "file(s) for error details)\n")
    assert explain_failed_submissions([str(log)]) is None
    assert explain_failed_submissions(None) is None
    assert explain_failed_submissions(tmp_path / "missing.log") is None
