"""The Snakemake workflow: dry runs of every profile, the smoke profile end to end, single-ablation reruns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyramid_repro.config import ConfigError, load_config

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


def test_dry_run_tiny_plans_its_experiments_and_all_on_request(tmp_path):
    # reports into an empty folder: existing reports/ of an earlier run would make the plan empty
    from pyramid_repro.experiments import experiments, training_experiments
    from pyramid_repro.workflow import Plan

    chosen = load_config("tiny").experiments
    assert chosen and set(chosen) < set(experiments()), "tiny leaves some experiments out (30-minute budget)"
    for extra, plan in (((), Plan({"profile": "tiny"})), (("experiments=all",), Plan({"profile": "tiny",
                                                                                       "experiments": "all"}))):
        r = snakemake("-n", "--config", f"reports={tmp_path}", *extra, "--", f"{tmp_path}/table1.pdf")
        assert r.returncode == 0, r.stderr[-4000:]
        jobs = planned_jobs(r.stdout)
        # tiny shares the image stage among the experiments whose image stage is the same computation
        runs = {d for e in plan.trained for d in plan.stages_done(e)}
        assert jobs["train_dit"] == len(runs) <= 3 * len(plan.trained)
        # one FID-point job per stage run (the snapshots' scoring, off the training jobs), which alone need the probe
        assert jobs["fid_points"] == len(runs)
        train = [j for j in r.stdout.split("\nrule ") if j.startswith("train_dit:")]
        assert train and not any("probe" in re.search(r"input: (.*)", j).group(1) for j in train)
        assert all("fid.csv" not in re.search(r"output: (.*)", j).group(1) for j in train)
        assert jobs["sample"] == len(plan.experiments)
        planned = {e for e in experiments() if f"results/tiny/{e}/metrics/" in r.stdout}
        assert planned == set(plan.experiments)
    assert plan.experiments == list(experiments()) and plan.trained == training_experiments()
    assert len(runs) < 3 * len(plan.trained)  # with every experiment, the ablations share pyramid's image stage
    assert Plan({"profile": "tiny"}).experiments == [e for e in experiments() if e in chosen]


def test_fid_every_0_plans_no_fid_points(tmp_path):
    """train.fid_every 0: no snapshots, no fid-points jobs; the curves still join (nothing) once trained."""
    from pyramid_repro.workflow import Plan

    plan = Plan({"profile": "smoke", "train": {"fid_every": 0}})
    assert plan.fid_curve_inputs("fullseq") == plan.stages_done("fullseq")
    on = Plan({"profile": "smoke"})
    # a shared image stage's points are its owner's
    assert on.fid_curve_inputs("bidirectional")[0] == f"{on.res}/pyramid/dit/image/fid.csv"
    r = snakemake("-n", "--config", "profile=smoke", f"reports={tmp_path}", "train={fid_every: 0}", "--",
                  f"{tmp_path}/smoke/table1.pdf")
    assert r.returncode == 0, r.stderr[-4000:]
    jobs = planned_jobs(r.stdout)
    assert "fid_points" not in jobs and jobs["fid_curve"] >= 2


def test_experiments_key_rejects_unknown_and_empty():
    with pytest.raises(ConfigError, match="experiments: 'pyramd' is not an experiment"):
        load_config("smoke", {"experiments": ["pyramid", "pyramd"]})
    with pytest.raises(ConfigError, match="an empty list runs nothing"):
        load_config("smoke", {"experiments": []})
    # the ablations PDF names what the profile leaves out
    from pyramid_repro.experiments import experiments
    from pyramid_repro.report.render import not_run

    assert not_run(load_config("smoke")) == []
    chosen = ["pyramid", "fullseq", "no_corrective_noise"]
    assert not_run(load_config("smoke", {"experiments": chosen})) == [e for e in experiments() if e not in chosen]


def test_dry_run_paper_on_slurm_lists_three_stages_per_experiment_with_gpus(tmp_path):
    r = snakemake("-n", "--profile", "workflows/profiles/slurm", "--config", "profile=paper", f"reports={tmp_path}",
                  "--", f"{tmp_path}/paper/table1.pdf")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    from pyramid_repro.experiments import training_experiments

    assert planned_jobs(r.stdout)["train_dit"] == 3 * len(training_experiments())
    for exp in training_experiments():
        for stage in ("image", "video_lowres", "video_highres"):
            assert f"results/paper/{exp}/dit/{stage}/done.json" in r.stdout
    # 8 GPUs per node x 16 nodes, one srun task per node starting each node's accelerate launch
    jobs = r.stdout.split("\nrule ")
    train = [j for j in jobs if j.startswith("train_dit:")]
    assert train and all("gpus=8" in j and "slurm_extra=--gpus-per-node=8" in j and "nodes=16" in j
                         and "processes_per_node=8" in j and "mpi=srun" in j and "tasks=16" in j for j in train)
    assert all("srun --nodes=16 --ntasks=16 --ntasks-per-node=1 " in j and "--gpus-per-node=8 --kill" in j and
               "pyramid-repro launch --nodes 16 --processes-per-node 8 -- train-dit" in j for j in train)
    assert "slurm_partition=gpu" in train[0]
    # the VAE trains on one node with its 8 GPUs
    vae = next(j for j in jobs if j.startswith("train_vae:"))
    assert "nodes=1," in vae and "pyramid-repro launch --nodes 1 --processes-per-node 8 -- train-vae" in vae


def test_dry_run_smoke_on_slurm_asks_for_the_smoke_profiles_resources(tmp_path):
    r = snakemake("-n", "--profile", "workflows/profiles/slurm", "--config", "profile=smoke", f"reports={tmp_path}",
                  "compute={account: test}", "--", f"{tmp_path}/smoke/table1.pdf")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    jobs = r.stdout.split("\nrule ")[1:]
    assert len(jobs) > 30
    for j in jobs:
        res = re.search(r"resources: (.*)", j).group(1)
        assert "cpus_per_task=1," in res and "gpus" not in res and "nodes=16" not in res, j
        assert "slurm_account=test" in res and "slurm_partition" not in res, j  # smoke names no partition
    assert all("Shell command: pyramid-repro " in j for j in jobs if j.startswith("train_dit:"))


def test_documented_snakemake_commands_parse():
    """Every `snakemake ...` command the README and the Snakefile header show plans without error (as a dry run;
    `--config` takes all following words, so a target after it needs `--`)."""
    import shlex

    docs = (ROOT / "README.md").read_text() + (ROOT / "Snakefile").read_text()
    cmds = set(re.findall(r"`(snakemake [^`]+)`", docs))
    cmds |= set(re.findall(r"^#\s+(snakemake .+?)\s*(?:#.*)?$", docs, re.M))
    assert len(cmds) >= 5, cmds
    for c in sorted(cmds):
        args = shlex.split(c.replace("<ablation>", "bidirectional").replace("\\|", "|"))[1:]
        r = snakemake("-n", *[a for a in args if a != "-n"])
        assert r.returncode == 0, f"{c}\n{r.stderr[-2000:]}"


def test_unknown_profile_fails_at_once():
    r = snakemake("-n", "--config", "profile=huge")
    assert r.returncode != 0 and "huge" in (r.stdout + r.stderr)


def test_smoke_workflow_end_to_end(smoke_run: Path):
    reports = smoke_run / "reports" / "smoke"
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
    r = snakemake(*args, "--forcerun", target, "--", f"{base}/reports/smoke/table1.pdf")
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
    r = snakemake(*args, "--", f"{base}/reports/smoke/table1.pdf")
    assert r.returncode == 0, r.stderr[-4000:]
    jobs = planned_jobs(r.stdout)
    assert "train_dit" not in jobs and "train_vae" not in jobs and "make_dataset" not in jobs
    assert jobs.get("sample", 0) >= 1


def test_two_profiles_in_one_checkout_keep_their_own_reports(smoke_run: Path):
    """The smoke run's reports are under <reports>/smoke/; the default profile planned into the same folders still
    plans its whole run and its report at <reports>/table1.pdf (a shared reports/table1.pdf used to make Snakemake
    plan nothing for the second profile), and nothing of the smoke run is planned again."""
    base = smoke_run
    assert (base / "reports" / "smoke" / "table1.pdf").is_file() and not (base / "reports" / "table1.pdf").exists()
    assert "profile smoke" in (base / "reports" / "smoke" / "table1.md").read_text()
    roots = [f"results={base}/results", f"reports={base}/reports"]
    r = snakemake("-n", "--config", *roots, "--", f"{base}/reports/table1.pdf")  # the default profile: tiny
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout)
    assert jobs["report"] == 1 and jobs["train_vae"] == 1 and jobs["make_dataset"] == 1
    assert f"{base}/results/smoke/" not in r.stdout
    r = snakemake("-n", "--config", "profile=smoke", *roots, "--", f"{base}/reports/smoke/table1.pdf")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]


def test_workflow_runs_from_another_directory(tmp_path):
    """`snakemake -s <checkout>/Snakefile --directory <elsewhere>`: the config, schema and rule files are found
    beside the Snakefile, the jobs find replication/ without PYRAMID_REPRO_ROOT, and results/ lands in <elsewhere>."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYRAMID_REPRO_ROOT", "PYRAMID_REPRO_OVERRIDES")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "1", "--config", "profile=smoke", "--", "results/smoke/data/manifest.csv"]
    r = subprocess.run(cmd, cwd="/", capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "results" / "smoke" / "data" / "manifest.csv").is_file()
    assert (tmp_path / "results" / "smoke" / "data" / "videos").is_dir()


def test_snakemake_html_report_has_captioned_figures(smoke_run: Path, tmp_path):
    """`snakemake --report report.html` on the smoke run: Snakemake's own report with the tables and figures under
    their captions (workflows/report/*.rst)."""
    out = tmp_path / "report.html"
    r = snakemake("--config", "profile=smoke", f"results={smoke_run}/results", f"reports={smoke_run}/reports",
                  "--report", str(out), "--", f"{smoke_run}/reports/smoke/table1.pdf")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    html = out.read_text(errors="replace")
    for caption in ("the paper's VBench rows", "FID against training samples", "GPU-hour audit"):
        assert caption in html, caption
    for name in ("table1.pdf", "fid_convergence.pdf", "ablations.pdf", "gpu_hours.pdf"):
        assert name in html, name
