# Pyramid Flow replication workflow.
#   snakemake --cores all reports/table1.pdf                      # embedded default profile (tiny, CPU)
#   snakemake --cores all --config profile=smoke reports/table1.pdf
#   snakemake -n --profile workflows/profiles/slurm --config profile=paper reports/table1.pdf
# Configuration is data: replication/config.yaml selects the profile (replication/profiles/<name>.yaml);
# experiments (pyramid, fullseq, ablations) are replication/experiments.yaml.
import json

from snakemake.utils import min_version, validate

from pyramid_repro.config import load_config
from pyramid_repro.experiments import experiments, training_experiments

min_version("9.0")


configfile: "replication/config.yaml"


validate(config, "replication/schemas/config.schema.yaml")

PROFILE = config["profile"]
# Everything in `config` besides `profile` overrides the profile (e.g. --config results=/tmp/r).
USER_OVERRIDES = {k: v for k, v in config.items() if k != "profile"}
CFG = load_config(PROFILE, USER_OVERRIDES).to_dict()  # defaults filled in, validated
RES = f"{CFG['results']}/{PROFILE}"
REPORTS = CFG["reports"]
EXPERIMENTS = list(experiments())
TRAINED = training_experiments()
CURRICULUM = [stage["name"] for stage in CFG["train"]["curriculum"]]


def _flatten(prefix, value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else k, v)
    else:
        yield prefix, value


# Passed to every `pyramid-repro` call so the CLI resolves exactly the config Snakemake resolved.
CONFIG_ARGS = f"--profile {PROFILE} " + " ".join(
    f"--set '{k}={json.dumps(v)}'" for k, v in _flatten("", USER_OVERRIDES)
)


def section(*keys):
    """JSON of a config section: used as `params` so that changing it reruns the rules that read it."""
    node = CFG
    for k in keys:
        node = node[k]
    return json.dumps(node, sort_keys=True)


def compute(key, default=None):
    return CFG["compute"].get(key, default)


include: "workflows/rules/data.smk"
include: "workflows/rules/vae.smk"
include: "workflows/rules/dit.smk"
include: "workflows/rules/sample.smk"
include: "workflows/rules/evaluate.smk"
include: "workflows/rules/report.smk"


rule all:
    default_target: True
    input:
        f"{REPORTS}/table1.pdf",
