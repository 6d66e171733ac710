"""The Snakemake workflow: dry runs of every profile, the smoke profile end to end, single-ablation reruns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    env = {**os.environ, "PYRAMID_REPRO_ROOT": str(ROOT)}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def planned_jobs(out: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    m = re.search(r"Job stats:\n(.*?)\ntotal\s+\d+", out, re.S)
    assert m, f"no job stats in snakemake output:\n{out[-3000:]}"
    rows = [ln.split() for ln in m.group(1).splitlines()[2:] if ln.strip()]
    return {r[0]: int(r[1]) for r in rows}


def test_lint_is_clean():
    r = snakemake("--lint")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_dry_run_tiny_plans_every_experiment(tmp_path):
    # reports into an empty folder: existing reports/ of an earlier run would make the plan empty
    r = snakemake("-n", "--config", f"reports={tmp_path}", "--", f"{tmp_path}/table1.pdf")
    assert r.returncode == 0, r.stderr[-4000:]
    jobs = planned_jobs(r.stdout)
    from pyramid_repro.experiments import experiments, training_experiments
    from pyramid_repro.workflow import Plan

    # tiny shares the image stage among the experiments whose image stage is the same computation
    runs = {d for e in training_experiments() for d in Plan({"profile": "tiny"}).stages_done(e)}
    assert jobs["train_dit"] == len(runs) < 3 * len(training_experiments())
    assert jobs["sample"] == len(experiments())


def test_dry_run_paper_on_slurm_lists_three_stages_per_experiment_with_gpus(tmp_path):
    r = snakemake("-n", "--profile", "workflows/profiles/slurm", "--config", "profile=paper", f"reports={tmp_path}",
                  "--", f"{tmp_path}/table1.pdf")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    from pyramid_repro.experiments import training_experiments

    assert planned_jobs(r.stdout)["train_dit"] == 3 * len(training_experiments())
    for exp in training_experiments():
        for stage in ("image", "video_lowres", "video_highres"):
            assert f"results/paper/{exp}/dit/{stage}/done.json" in r.stdout
    assert "gpus=8" in r.stdout and "nodes=16" in r.stdout


def test_documented_snakemake_commands_parse():
    """Every `snakemake ...` command the README and the Snakefile header show plans without error (as a dry run;
    `--config` takes all following words, so a target after it needs `--`)."""
    import shlex

    docs = (ROOT / "README.md").read_text() + (ROOT / "Snakefile").read_text()
    cmds = set(re.findall(r"`(snakemake [^`]+)`", docs)) | set(re.findall(r"^#\s+(snakemake .+?)\s*(?:#.*)?$", docs, re.M))
    assert len(cmds) >= 5, cmds
    for c in sorted(cmds):
        args = shlex.split(c.replace("<ablation>", "bidirectional").replace("\\|", "|"))[1:]
        r = snakemake("-n", *[a for a in args if a != "-n"])
        assert r.returncode == 0, f"{c}\n{r.stderr[-2000:]}"


def test_unknown_profile_fails_at_once():
    r = snakemake("-n", "--config", "profile=huge")
    assert r.returncode != 0 and "huge" in (r.stdout + r.stderr)


def test_smoke_workflow_end_to_end(smoke_run: Path):
    reports = smoke_run / "reports"
    for name in ("table1.pdf", "table1.csv", "table1.md"):
        assert (reports / name).is_file(), f"missing {name}"
    from pyramid_repro.experiments import experiments

    for exp in experiments():
        metrics = list((smoke_run / "results" / "smoke" / exp / "metrics").glob("*.json"))
        assert metrics, f"no metrics for {exp}"
        for m in metrics:
            data = json.loads(m.read_text())
            assert data["backend"] and data["profile"] == "smoke" and data["config_hash"]


def test_single_ablation_rerun_plans_only_that_ablation(smoke_run: Path):
    base = smoke_run
    args = ["-n", "--config", "profile=smoke", f"results={base}/results", f"reports={base}/reports"]
    # smoke shares pyramid's image stage (train.share_image_stage): the ablation's first own stage is video_lowres
    target = f"{base}/results/smoke/bidirectional/dit/video_lowres/done.json"
    r = snakemake(*args, "--forcerun", target, "--", f"{base}/reports/table1.pdf")
    assert r.returncode == 0, r.stderr[-4000:]
    outputs = " ".join(re.findall(r"^\s+output: (.*)$", r.stdout, re.M))
    from pyramid_repro.experiments import experiments

    planned = {e for e in experiments() if f"results/smoke/{e}/" in outputs}
    assert planned == {"bidirectional"}, f"dry run touches other experiments: {planned}"
    jobs = planned_jobs(r.stdout)
    assert jobs["train_dit"] == 2 and jobs["sample"] == 1


def test_config_change_reruns_only_affected_rules(smoke_run: Path):
    base = smoke_run
    args = ["-n", "--config", "profile=smoke", f"results={base}/results", f"reports={base}/reports",
            "eval={'samples_per_prompt': 2}"]
    r = snakemake(*args, "--", f"{base}/reports/table1.pdf")
    assert r.returncode == 0, r.stderr[-4000:]
    jobs = planned_jobs(r.stdout)
    assert "train_dit" not in jobs and "train_vae" not in jobs and "make_dataset" not in jobs
    assert jobs.get("sample", 0) >= 1
