# Pyramid Flow replication workflow.
#   snakemake --cores all reports/table1.pdf                      # embedded default profile (tiny, CPU)
#   snakemake --cores all --config profile=smoke -- reports/smoke/table1.pdf
#   snakemake --cores all --config train_seeds=3 -- reports/seeds_3/claims.pdf   # claims across 3 training runs each
#   snakemake -n --profile workflows/profiles/slurm --config profile=paper -- reports/paper/table1.pdf
#   fine-tune the authors' release (docs/release.md §9): --config profile=finetune release=<release folder>
# After a run, Snakemake's own HTML report with captioned tables and figures: snakemake --report report.html
# From another working directory (results/ and reports/ go there): snakemake -s <checkout>/Snakefile --directory DIR
# Configuration is data: replication/config.yaml selects the profile (replication/profiles/<name>.yaml);
# experiments (pyramid, fullseq, ablations) are replication/experiments.yaml. Every path comes from the run's
# layout (pyramid_repro/layout.py via PLAN.paths); docs/design.md describes the tree.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

REPO = Path(workflow.basedir)
# the jobs (pyramid-repro commands) find replication/ here, whatever the working directory
os.environ.setdefault("PYRAMID_REPRO_ROOT", str(REPO))

from pyramid_repro.base import OVERRIDES_ENV
from pyramid_repro.workflow import Plan, coerce_cli_values, expand_experiments, explain_failed_submissions

min_version("9.0")


configfile: str(REPO / "replication" / "config.yaml")


expand_experiments(coerce_cli_values(config))
validate(config, str(REPO / "replication" / "schemas" / "config.schema.yaml"))

PLAN = Plan(config)
for _line in PLAN.identical_warnings:  # two experiments that resolve to one configuration (docs/howto.md §1)
    print(_line, file=sys.stderr)
for _line in PLAN.release_warnings:  # experiments a release cannot be fine-tuned as (docs/release.md §9)
    print(_line, file=sys.stderr)
CFG, PROFILE, RES, REPORTS = PLAN.cfg, PLAN.profile, PLAN.res, PLAN.reports
EXPERIMENTS, TRAINED, CURRICULUM = PLAN.experiments, PLAN.trained, PLAN.curriculum
SUITE, BACKENDS = PLAN.suite, PLAN.backends
# The jobs resolve the same config: the profile is on their command line, the --config overrides reach them
# through the environment (so an override reruns only the rules whose `params` sections it changes).
os.environ[OVERRIDES_ENV] = PLAN.overrides_json
# progress bars go to the rule logs: one line every 10 s there, not ten a second (tqdm reads TQDM_* variables)
os.environ.setdefault("TQDM_MININTERVAL", "10")
# documents the software of every rule (used with --use-conda); the default run uses the installed package
ENV = str(REPO / "environment.yml")
# Snakemake's HTML report (--report): which outputs appear, under which heading (captions: workflows/report/<output>.rst)
REPORT_CATEGORIES = {"claims_pdf": "0. Claims", "table1_pdf": "1. Tables", "table5_pdf": "1. Tables",
                     "table6_pdf": "1. Tables", "fid_convergence_pdf": "2. Figures", "ablations_pdf": "2. Figures",
                     "gpu_hours_pdf": "3. GPU-hour audit"}


report: "workflows/report/workflow.rst"


# a job that sbatch refused never ran: say why (Snakemake's own message points at its empty rule log)
onerror:
    _why = explain_failed_submissions(log)
    if _why:
        print(_why, file=sys.stderr)


include: "workflows/rules/data.smk"
include: "workflows/rules/vae.smk"
include: "workflows/rules/dit.smk"
include: "workflows/rules/sample.smk"
include: "workflows/rules/evaluate.smk"
include: "workflows/rules/report.smk"
include: "workflows/rules/study.smk"


rule all:
    default_target: True
    input:
        PLAN.paths.report("table1.pdf"),
