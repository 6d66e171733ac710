"""What the Snakefile needs to plan a run, kept out of the rule files (Snakemake lint: no functions beside rules).

`Plan(config)` resolves the profile + command-line overrides exactly as the CLI does, and answers the questions
the rules ask: config sections as `params` (so a change reruns the rules that read it), compute resources, the
curriculum's previous stage, the checkpoint an experiment samples from, and how to launch a training job.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from pyramid_repro.config import load_config
from pyramid_repro.experiments import experiments, stage_owner, training_experiments


def coerce_cli_values(node: Any) -> Any:
    """Snakemake parses nested --config values with YAML's BaseLoader (every scalar a string): re-read string
    leaves as YAML scalars so `--config eval="{samples_per_prompt: 2}"` means the number 2."""
    if isinstance(node, dict):
        for k, v in node.items():
            node[k] = coerce_cli_values(v)
        return node
    if isinstance(node, list):
        return [coerce_cli_values(v) for v in node]
    if isinstance(node, str):
        try:
            v = yaml.safe_load(node)
        except yaml.YAMLError:
            return node
        return v if isinstance(v, (int, float, bool, list)) else node
    return node


class Plan:
    def __init__(self, config: dict[str, Any]):
        self.profile = config["profile"]
        # everything in Snakemake's `config` besides `profile` overrides the profile (e.g. --config results=/tmp/r)
        self.overrides = {k: v for k, v in config.items() if k != "profile"}
        self.cfg = load_config(self.profile, self.overrides).to_dict()  # defaults filled in, validated
        self.res = f"{self.cfg['results']}/{self.profile}"
        self.reports = self.cfg["reports"]
        self.experiments = list(experiments())
        self.trained = training_experiments()
        self.curriculum = [s["name"] for s in self.cfg["train"]["curriculum"]]
        self.suite = self.cfg["eval"]["suite"]
        self.backends = list(self.cfg["eval"]["backends"])
        # handed to every `pyramid-repro` job (environment variable cliutil.OVERRIDES_ENV)
        self.overrides_json = json.dumps(self.overrides, sort_keys=True)

    def section(self, *keys: str) -> str:
        """JSON of a config section, for `params`."""
        node = self.cfg
        for k in keys:
            node = node[k]
        return json.dumps(node, sort_keys=True)

    def compute(self, key: str, default: Any = None) -> Any:
        return self.cfg["compute"].get(key, default)

    def stage_cfg(self, stage: str) -> str:
        return json.dumps(self.cfg["train"]["curriculum"][self.curriculum.index(stage)], sort_keys=True)

    def train_cfg(self) -> str:
        return json.dumps({k: v for k, v in self.cfg["train"].items() if k != "curriculum"}, sort_keys=True)

    def experiment_overrides(self, name: str) -> str:
        return json.dumps(experiments()[name].overrides, sort_keys=True)

    def stage_done(self, experiment: str, stage: str) -> str:
        """done.json of `experiment`'s run of `stage`: its own, or the shared one (train.share_image_stage)."""
        kind = self.cfg["train"]["curriculum"][self.curriculum.index(stage)]["kind"]
        owner = stage_owner(experiment, kind, self.cfg["train"]["share_image_stage"])
        return f"{self.res}/{owner}/dit/{stage}/done.json"

    def stages_done(self, experiment: str) -> list[str]:
        return [self.stage_done(experiment, s) for s in self.curriculum]

    def previous_stage(self, experiment: str, stage: str) -> list[str]:
        i = self.curriculum.index(stage)
        return [] if i == 0 else [self.stage_done(experiment, self.curriculum[i - 1])]

    def final_checkpoint(self, experiment: str) -> str:
        """done.json of the last stage of the experiment whose weights `experiment` samples."""
        source = experiments()[experiment].checkpoint_from
        return f"{self.res}/{source}/dit/{self.curriculum[-1]}/done.json"

    @staticmethod
    def launcher(resources) -> str:
        """CPU: run the command directly. GPUs: `accelerate launch` with one process per GPU (data parallel,
        `--multi_gpu` from two processes on) over the resources' nodes. Precision is the profile's (the job's
        Accelerator sets it), not the launcher's."""
        gpus, nodes = int(resources.get("gpus", 0) or 0), int(resources.get("nodes", 1) or 1)
        if gpus <= 0:
            return "pyramid-repro"
        procs = gpus * nodes
        multi = "--multi_gpu " if procs > 1 else ""
        return f"accelerate launch {multi}--num_processes {procs} --num_machines {nodes} -m pyramid_repro.cli"
