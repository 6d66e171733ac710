"""What the Snakefile needs to plan a run, kept out of the rule files (Snakemake lint: no functions beside rules).

`Plan(config)` resolves the profile + command-line overrides exactly as the CLI does, and answers the questions
the rules ask: every path (`Plan.paths`, the run's layout.Layout as strings, wildcards allowed), config sections as
`params` (so a change reruns the rules that read it), compute resources, the curriculum's previous stage, the
checkpoint an experiment samples from, the files a job writes, and how to launch a training job. With `release`
set (fine-tuning one of the authors' releases, docs/release.md §12) the release's causal VAE stands in for train-vae's
(`vae_input`) and only the experiments a release can fine-tune run (`finetunable`).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from pyramid_repro.backend_specs import backend_spec, backends_filling
from pyramid_repro.config import Config, ConfigError, for_experiment, load_config, load_yaml
from pyramid_repro.experiments import experiments, selected_experiments, stage_owner, training_experiments
from pyramid_repro.launch import launch_prefix
from pyramid_repro.layout import (EVALCRAFTER_REPORT_FILES, REPORT_FILES, Layout, run_name, run_name_pattern,
                                   split_run_name)
from pyramid_repro.provenance import identical_experiments, identical_experiments_warning
from pyramid_repro.release_specs import VAE_FOLDER, method_conflicts, release_vae_config

# files save_pretrained writes into a model folder (diffusers ModelMixin) and the resolved config saved beside them
MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "train_config.yaml")


class Paths:
    """A Layout whose methods return strings (Snakemake input/output patterns)."""

    def __init__(self, layout: Layout):
        self._layout = layout

    def __getattr__(self, name: str):
        attr = getattr(self._layout, name)
        if callable(attr):
            return lambda *args: str(attr(*args))
        return str(attr)


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
            v = load_yaml(node)
        except yaml.YAMLError:
            return node
        return v if isinstance(v, (int, float, bool, list)) else node
    return node


def expand_experiments(config: dict[str, Any]) -> dict[str, Any]:
    """`--config experiments=all` means every experiment of replication/experiments.yaml (the key's null);
    `--config train_seeds=3` means train.seeds: 3 (`expand_train_seeds`)."""
    if config.get("experiments") == "all":
        config["experiments"] = None
    return expand_train_seeds(config)


def expand_train_seeds(config: dict[str, Any]) -> dict[str, Any]:
    """The shorthand `--config train_seeds=N` for `--config train="{seeds: N}"`: N independent training runs per
    trained experiment, the claims decided across them (docs/method.md §11)."""
    if "train_seeds" in config:
        n = config.pop("train_seeds")
        if isinstance(n, str) and n.strip().isdigit():
            n = int(n)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"--config train_seeds={n!r}: expected a whole number of training runs >= 1")
        config["train"] = {**(config.get("train") or {}), "seeds": n}
    return config


class Plan:
    def __init__(self, config: dict[str, Any]):
        self.profile = config["profile"]
        # everything in Snakemake's `config` besides `profile` overrides the profile (e.g. --config results=/tmp/r)
        self.overrides = expand_experiments({k: v for k, v in config.items() if k != "profile"})
        config_obj = load_config(self.profile, self.overrides)
        self.cfg = config_obj.to_dict()  # defaults filled in, validated
        self.paths = Paths(config_obj.layout)
        self.res, self.reports = self.paths.results, self.paths.reports
        # what the reports show (the profile's `experiments`, or all); any experiment can still be built by its
        # own target (every rule's wildcards accept all of them)
        self.all_experiments = list(experiments())
        self.experiments = selected_experiments(config_obj.experiments)
        # fine-tuning a release: its VAE folder (checked here, so a wrong folder fails before any job) and the
        # experiments it can fine-tune (one warning line names the others)
        self.release = config_obj.release
        self.release_warnings: list[str] = []
        if self.release:
            self.release_vae = str(release_vae_config(self.release))
            self.experiments, self.release_warnings = finetunable(config_obj, self.experiments)
        self.trained = [e for e in training_experiments() if e in self.experiments]
        self.all_trained = training_experiments()
        self.curriculum = [s["name"] for s in self.cfg["train"]["curriculum"]]
        self.seeds = int(self.cfg["train"]["seeds"])  # training runs per trained experiment (layout.run_name)
        self.suite = self.cfg["eval"]["suite"]
        self.backends = list(self.cfg["eval"]["backends"])
        # handed to every `pyramid-repro` job (environment variable base.OVERRIDES_ENV)
        self.overrides_json = json.dumps(self.overrides, sort_keys=True)
        # arms that are not what they claim to be: the Snakefile prints these lines when it plans a run (a warning,
        # not a refusal: docs/howto.md §1)
        self.identical_warnings = identical_experiments_warning(
            self.profile, identical_experiments(config_obj, self.experiments))

    def vae_input(self) -> str:
        """The file every rule that encodes or decodes latents depends on: train-vae's normalization.json, or with
        `release` set the release's causal_video_vae/config.json (no VAE is trained; the jobs load the release's
        through releases.vae_for)."""
        return self.release_vae if self.release else self.paths.vae_normalization()

    def release_cfg(self) -> str:
        """JSON of the release a run fine-tunes (`release`, `release_resolution`), for `params`: another release
        folder or resolution reruns the rules that load it."""
        return json.dumps({k: self.cfg[k] for k in ("release", "release_resolution")}, sort_keys=True)

    def eval_vae_args(self) -> str:
        """The eval-vae options of the run's VAE: none for train-vae's, `--vae <release>/causal_video_vae` for a
        fine-tune (the report's VAE rows then measure the release's VAE on the run's held-out clips)."""
        return f"--vae {shlex.quote(str(Path(self.release) / VAE_FOLDER))}" if self.release else ""

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
        """The train section without the curriculum (the stage's own entry is a separate param) and without what
        only the FID-point job reads (fid_cfg)."""
        return json.dumps({k: v for k, v in self.cfg["train"].items()
                           if k not in ("curriculum", "fid_guidance", "seeds", "run")}, sort_keys=True)

    def fid_cfg(self) -> str:
        """What the FID-point job's generation and scoring read (params of `fid_points`)."""
        t = self.cfg["train"]
        return json.dumps({"seed": self.cfg["seed"], "fid_samples": t["fid_samples"],
                           "fid_guidance": t["fid_guidance"], "sampler": self.cfg["pyramid"]["sampler"]},
                          sort_keys=True)

    def experiment_overrides(self, name: str) -> str:
        """The overrides of the experiment of run name `name` (pyramid or pyramid/seed_1: the same)."""
        return json.dumps(experiments()[split_run_name(name)[0]].overrides, sort_keys=True)

    # -- training runs (train.seeds; layout.run_name) ---------------------------------------------------------
    def runs(self, experiment: str) -> list[str]:
        """The run names of an experiment's training runs: `experiment` itself (run 0), then <experiment>/seed_<k>.
        An inference-only experiment has as many as the experiment whose checkpoints it samples."""
        return [run_name(experiment, k) for k in range(self.seeds)]

    @staticmethod
    def run_pattern(names: list[str]) -> str:
        """The `{experiment}` wildcard constraint of rules over `names`: an experiment or one of its seed runs."""
        return run_name_pattern(names)

    def seed_run_inputs(self) -> list[str]:
        """What the claims read besides the tables' inputs (run 0): the metrics and FID curves of the runs k >= 1."""
        extra = [r for e in self.experiments for r in self.runs(e)[1:]]
        trained = [r for e in self.trained for r in self.runs(e)[1:]]
        return [self.paths.metrics(r, b) for r in extra for b in self.backends] + [self.paths.fid_curve(r)
                                                                                   for r in trained]

    def stage_run_owner(self, experiment: str, stage: str) -> str:
        """The run (name) whose folder holds run `experiment`'s training of `stage` (train.share_image_stage): the
        owner experiment's run of the same index."""
        name, run = split_run_name(experiment)
        kind = self.cfg["train"]["curriculum"][self.curriculum.index(stage)]["kind"]
        return run_name(stage_owner(name, kind, self.cfg["train"]["share_image_stage"]), run)

    def stage_done(self, experiment: str, stage: str) -> str:
        """done.json of `experiment`'s run of `stage`: its own, or the shared one (train.share_image_stage)."""
        return self.paths.stage_done(self.stage_run_owner(experiment, stage), stage)

    def stages_done(self, experiment: str) -> list[str]:
        return [self.stage_done(experiment, s) for s in self.curriculum]

    def fid_points_on(self) -> bool:
        """Whether the run has FID-vs-compute points (train.fid_every > 0)."""
        return bool(self.cfg["train"]["fid_every"])

    def stage_fid(self, experiment: str, stage: str) -> str:
        """fid.csv of `experiment`'s run of `stage` (the `fid_points` job's output), its owner's when shared."""
        return self.paths.stage_fid(self.stage_run_owner(experiment, stage), stage)

    def fid_curve_inputs(self, experiment: str) -> list[str]:
        """What the experiment's fid_curve.csv joins: its stages' fid.csv files, or with train.fid_every 0 (no
        points) the stages' done.json (an empty curve once trained)."""
        if not self.fid_points_on():
            return self.stages_done(experiment)
        return [self.stage_fid(experiment, s) for s in self.curriculum]

    def previous_stage(self, experiment: str, stage: str) -> list[str]:
        i = self.curriculum.index(stage)
        return [] if i == 0 else [self.stage_done(experiment, self.curriculum[i - 1])]

    def final_checkpoint(self, experiment: str) -> str:
        """done.json of the last stage of the run whose weights run `experiment` samples: the same run index of its
        `checkpoint_from` experiment (no_corrective_noise/seed_1 samples pyramid/seed_1)."""
        name, run = split_run_name(experiment)
        return self.paths.stage_done(run_name(experiments()[name].checkpoint_from, run), self.curriculum[-1])

    # -- what a job writes (declared outputs) -----------------------------------------------------------------
    def synthetic_data(self) -> bool:
        return self.cfg["data"]["source"] == "synthetic"

    def stage_outputs(self, experiment: str, stage: str) -> dict[str, str]:
        """The files a finished DiT stage leaves (besides done.json): final weights, loss log. Its checkpoints/,
        ledger.csv and fid_snapshots/ are not declared: Snakemake deletes a job's declared outputs before running it
        again, and a rerun must resume from the checkpoints and keep the ledger rows and FID snapshots of earlier
        attempts (the `fid_points` job reads the snapshots through done.json)."""
        final = self.paths.stage_final(experiment, stage)
        out = {f"final_{k.split('.')[0]}": f"{final}/{k}" for k in MODEL_FILES}
        out["log"] = f"{self.paths.stage(experiment, stage)}/train_log.csv"
        return out

    def vae_outputs(self) -> dict[str, str]:
        """The files train-vae leaves besides normalization.json (its checkpoints/ and ledger.csv: see
        stage_outputs)."""
        final = self.paths.vae_final()
        return {**{f"final_{k.split('.')[0]}": f"{final}/{k}" for k in MODEL_FILES},
                "log": f"{self.paths.vae()}/train_log.csv"}

    def report_outputs(self) -> dict[str, str]:
        """Every file the report job writes (table6 only when an EvalCrafter backend is scored)."""
        table6 = backends_filling("table6")
        names = REPORT_FILES + (EVALCRAFTER_REPORT_FILES if any(b in table6 for b in self.backends) else ())
        return {n.replace(".", "_"): self.paths.report(n) for n in names}

    def resources(self, gpus: int = 0, nodes: int = 1, cpus: int | None = None, mem_mb: int | None = None,
                  runtime: int | None = None, training: bool = False) -> dict[str, Any]:
        """A job's Snakemake resources from the profile's `compute` section (docs/design.md §7):
        - CPUs per node as `cpus_per_task` (`compute.cpus_per_job` unless given; the rule's `threads` say the same
          to a local run), memory in MB per node (`compute.mem_mb`), runtime in minutes (`compute.runtime_min`);
        - GPUs per node as `gpus` and, for the SLURM executor, `slurm_extra: --gpus-per-node=N`;
        - `slurm_partition` / `slurm_account` from `compute.partition` / `compute.account`;
        - a training job: `nodes` and `processes_per_node` (`compute.processes_per_node`, else one per GPU, else
          one); over several nodes also `mpi` + `tasks` (one task per node, started by the rule's own `srun`:
          `launcher`)."""
        res: dict[str, Any] = {"cpus_per_task": cpus or self.compute("cpus_per_job"),
                               "mem_mb": mem_mb or self.compute("mem_mb"),
                               "runtime": runtime or self.compute("runtime_min")}
        if gpus > 0:
            res["gpus"] = gpus
            res["slurm_extra"] = f"--gpus-per-node={gpus}"
        if training:
            res["nodes"] = nodes
            res["processes_per_node"] = self.compute("processes_per_node") or max(1, gpus)
            if nodes > 1:
                res.update(mpi="srun", tasks=nodes)
        for key, name in (("partition", "slurm_partition"), ("account", "slurm_account")):
            if self.compute(key):
                res[name] = self.compute(key)
        return res

    def training_resources(self, multi_node: bool = True) -> dict[str, Any]:
        """Resources of a training job: the profile's GPUs per node, its nodes and processes per node. The VAE
        (multi_node=False) runs on one node with `compute.vae_cpus` CPUs when set."""
        nodes = self.compute("nodes") if multi_node else 1
        cpus = None if multi_node else self.vae_cpus()
        return self.resources(gpus=self.compute("gpus_per_job"), nodes=nodes, cpus=cpus, training=True)

    @staticmethod
    def training_priority(experiment: str) -> int:
        """Scheduling priority of a DiT stage job (Snakemake runs ready jobs of higher priority first): training
        before sampling and scoring, which gate nothing long; `pyramid`'s stages first among them, since its image
        stage starts three ablations and its final weights feed two sample jobs (the end of the run waits on it)."""
        return 8 if split_run_name(experiment)[0] == "pyramid" else 5

    def vae_cpus(self) -> int:
        """CPUs of the VAE training job: `compute.vae_cpus`, else `compute.cpus_per_job`."""
        return self.compute("vae_cpus") or self.compute("cpus_per_job")

    def probe_cpus(self) -> int:
        """CPUs of the probe training job: `compute.probe_cpus`, else `compute.cpus_per_job`."""
        return self.compute("probe_cpus") or self.compute("cpus_per_job")

    def score_gpus(self) -> int:
        """GPUs of a score job: one when a scored backend needs a GPU (backend_specs `needs_gpu`: VBench), else
        none."""
        return 1 if any(backend_spec(b).needs_gpu for b in self.backends) else 0

    def gpu_resources(self, **kw: Any) -> dict[str, Any]:
        """Resources of a one-GPU job (sampling, encoding, evaluation) when the profile has GPUs."""
        return self.resources(gpus=min(1, self.compute("gpus_per_job")), **kw)

    @staticmethod
    def launcher(resources) -> str:
        """The words before a training command: plain `pyramid-repro` for one process, `pyramid-repro launch`
        (accelerate) for several on one node, `srun` of one `pyramid-repro launch` per node over several nodes
        (launch.launch_prefix). Reads the job's resources, so --set-resources changes the launch with the request."""
        nodes = int(resources.get("nodes", 1) or 1)
        procs = int(resources.get("processes_per_node", 1) or 1)
        return launch_prefix(nodes, procs, int(resources.get("cpus_per_task", 1) or 1),
                             int(resources.get("gpus", 0) or 0))

    @staticmethod
    def process_threads(resources) -> int:
        """CPU threads of each training process: the job's CPUs per node shared among its processes."""
        cpus = int(resources.get("cpus_per_task", 1) or 1)
        return max(1, cpus // int(resources.get("processes_per_node", 1) or 1))


def finetunable(cfg: Config, chosen: list[str]) -> tuple[list[str], list[str]]:
    """The experiments of `chosen` a release can be fine-tuned as (their resolved config keeps the method the
    releases were trained with: release_specs.RELEASE_METHOD), and the warning line naming the others (none when
    nothing is left out). An inference-only experiment follows its `checkpoint_from`. ConfigError when none is left."""
    keep, dropped = [], {}
    for name in chosen:
        exp = experiments()[name]
        conflicts = method_conflicts(for_experiment(cfg, exp.checkpoint_from or name).to_dict())
        if exp.checkpoint_from and not conflicts:  # its own sampling method too
            conflicts = method_conflicts(for_experiment(cfg, name).to_dict())
        if conflicts:
            dropped[name] = conflicts
        else:
            keep.append(name)
    if not keep:
        raise ConfigError(f"release={cfg.release!r}: none of the experiments {', '.join(chosen)} keeps the method the "
                          f"release was trained with ({'; '.join(next(iter(dropped.values())))}); set "
                          "experiments: [pyramid]")
    if not dropped:
        return keep, []
    why = "; ".join(f"{n}: {', '.join(c)}" for n, c in dropped.items())
    return keep, [f"release={cfg.release}: fine-tuning runs {', '.join(keep)} only; left out, since they change "
                  f"the method the release was pretrained with (that would be pretraining): {why}"]


# -- failed submissions ----------------------------------------------------------------------------------------------
_SBATCH_FAILED = re.compile(r"^Error in rule (?P<rule>\S+?):\s*\n\s*message: SLURM sbatch failed\. The error message "
                            r"was '(?P<error>.*?)'\.?\s*$", re.MULTILINE)
_RULE_LOG = re.compile(r"^\s*log: (?P<log>.+?) \(check log file", re.MULTILINE)


def explain_failed_submissions(snakemake_log: str | Path | list | None) -> str | None:
    """What to tell a user whose jobs sbatch refused, read from Snakemake's own log of the run (the `onerror` hook).

    Snakemake ends such a failure with "log: <the rule's log> (check log file(s) for error details)", but the job
    never started, so that file is absent or empty; the reason is sbatch's error message. `snakemake_log` is the
    log file, or the list of them `onerror` gets. Returns None when no submission failed (a job that ran and failed
    has its own log)."""
    paths = snakemake_log if isinstance(snakemake_log, (list, tuple)) else [snakemake_log]
    text = "\n".join(Path(p).read_text(errors="replace") for p in paths if p is not None and Path(p).is_file())
    failed = list(_SBATCH_FAILED.finditer(text))
    if not failed:
        return None
    errors: dict[str, list[str]] = {}
    for m in failed:
        errors.setdefault(m.group("error").strip(), []).append(m.group("rule"))
    logs = [m.group("log") for m in _RULE_LOG.finditer(text[failed[0].start():])][:1]
    lines = [f"sbatch refused {len(failed)} job submission(s); those jobs never started, so their rule logs"
             f"{' (e.g. ' + logs[0] + ')' if logs else ''} are empty or absent. sbatch said:"]
    lines += [f"  '{err}'  (rules: {', '.join(sorted(set(rules)))})" for err, rules in errors.items()]
    lines += ["Check the partition and account the jobs ask for: compute.partition / compute.account of the "
              "profile, or --config compute=\"{partition: P, account: A}\" (`sinfo -s` lists partitions, "
              "`sacctmgr show assoc user=$USER` your accounts), and the time/memory/GPU limits of that partition."]
    return "\n".join(lines)
