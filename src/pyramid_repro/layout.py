"""Where every artifact of a run lives: the one module that knows the layout of results/ and reports/.

The Snakefile, the rule files and every command ask a :class:`Layout` for paths; nothing else joins path parts.
A method called with Snakemake wildcards (``layout.stage_done("{experiment}", "{stage}")``) returns the rule's
pattern, so a rule's declared output and the file its command writes are the same expression. docs/design.md §2
lists the tree.

Reports are per profile: the default profile's (replication/config.yaml) go to ``<reports>/`` (the user's
``reports/table1.pdf``), every other profile's to ``<reports>/<profile>/``, so one profile's reports never stand in
for another's (Snakemake would otherwise see ``reports/table1.pdf`` and plan nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from pyramid_repro.base import default_profile

REPORT_FILES = ("table1.pdf", "table1.csv", "table1.md", "table5.pdf", "table5.csv", "fid_convergence.pdf",
                "fid_convergence.csv", "fid_convergence.txt", "ablations.pdf", "ablations.csv", "gpu_hours.pdf",
                "gpu_hours.csv", "claims.pdf", "claims.csv", "claims.md")
EVALCRAFTER_REPORT_FILES = ("table6.pdf", "table6.csv")  # only when an `evalcrafter` backend is scored
# a user study's name (`pyramid-repro study --name`): its folder under studies/ and part of its report files' names
STUDY_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# `pyramid-repro study report --name <study>`: the user study's report, named after the study so that one study's
# report never overwrites another's (not part of the main target; workflows/rules/study.smk). `{study}` is the
# study's name: str.format or a Snakemake wildcard.
USER_STUDY_REPORT_FILES = ("user_study_{study}.pdf", "user_study_{study}.csv", "user_study_{study}.md")


def user_study_report_files(study: str) -> tuple[str, ...]:
    """The report files of study `study`: user_study_<study>.{pdf,csv,md}."""
    return tuple(f.format(study=study) for f in USER_STUDY_REPORT_FILES)


SEED_DIR = "seed_{run}"  # folder of training run k >= 1 inside its experiment's folder
_RUN_NAME = re.compile(r"^(?P<experiment>[^/]+)(?:/seed_(?P<run>[1-9][0-9]*))?$")


def run_name(experiment: str, run: int = 0) -> str:
    """The folder of an experiment's training run `run` relative to the profile's results: the experiment's own
    for run 0 (a one-seed run's paths do not change), <experiment>/seed_<k> for k >= 1."""
    return experiment if run == 0 else f"{experiment}/{SEED_DIR.format(run=run)}"


def split_run_name(name: str) -> tuple[str, int]:
    """(experiment, run) of a run name (`run_name`); a ValueError naming the expected form otherwise."""
    m = _RUN_NAME.match(name)
    if not m:
        raise ValueError(f"run name {name!r}: expected <experiment> or <experiment>/seed_<k> with k >= 1")
    return m.group("experiment"), int(m.group("run") or 0)


def run_name_pattern(experiments: list[str]) -> str:
    """Regular expression of every run name of `experiments` (a Snakemake wildcard constraint)."""
    names = "|".join(re.escape(e) for e in experiments)
    return f"(?:{names})(?:/seed_[1-9][0-9]*)?"


def units_path(metrics_json: Path) -> Path:
    """The per-video data file beside a metrics JSON: metrics/<backend>.json -> metrics/<backend>.units.npz."""
    return Path(metrics_json).with_suffix(".units.npz")


@dataclass(frozen=True)
class Layout:
    """Paths of one profile's run: `results` = <results>/<profile>, `reports` = its reports folder."""

    results: Path
    reports: Path
    run: int = 0  # the training run whose experiment folders the methods below name (train.run)

    @staticmethod
    def of(cfg) -> "Layout":
        """The layout of a resolved Config (its `results`, `reports`, `profile`, train.seeds and train.run)."""
        reports = Path(cfg.reports)
        if cfg.profile != default_profile():
            reports = reports / cfg.profile
        if cfg.train.seeds > 1:
            reports = reports / f"seeds_{cfg.train.seeds}"
        return Layout(Path(cfg.results) / cfg.profile, reports, cfg.train.run)

    def for_run(self, run: int) -> "Layout":
        """The same run's layout with the folders of training run `run` (0: the experiments' own)."""
        return replace(self, run=run)

    def experiment(self, experiment: str) -> Path:
        """Folder of an experiment's training run (this layout's `run`; `experiment` may also be a run name)."""
        return self.results / run_name(experiment, self.run)

    # -- data and the VAE -------------------------------------------------------------------------------------
    def data(self) -> Path:
        return self.results / "data"

    def manifest(self) -> Path:
        return self.data() / "manifest.csv"

    def dataset_info(self) -> Path:
        return self.data() / "dataset.json"

    def vae(self) -> Path:
        """Training folder of the VAE: checkpoints/, final/, train_log.csv, tensorboard/, ledger.csv, eval.json."""
        return self.results / "vae"

    def vae_curves(self) -> Path:
        """The VAE's live training curves (TensorBoard event files; `curves`)."""
        return self.curves(self.vae())

    def vae_final(self) -> Path:
        return self.vae() / "final"

    def vae_normalization(self) -> Path:
        return self.vae_final() / "normalization.json"

    def vae_eval(self) -> Path:
        return self.vae() / "eval.json"

    def vae_reconstructions(self) -> Path:
        return self.vae() / "reconstructions.png"

    def latents(self, stage: str | None = None) -> Path:
        """The normalised latent cache (of one curriculum stage)."""
        return self.results / "latents" if stage is None else self.results / "latents" / stage

    def latent_index(self, stage: str) -> Path:
        return self.latents(stage) / "index.json"

    def text_cache(self, stage: str) -> Path:
        return self.results / "text_cache" / f"{stage}.safetensors"

    # -- the probe behind the offline backends ---------------------------------------------------------------
    def probe(self) -> Path:
        return self.results / "probe"

    def probe_info(self) -> Path:
        return self.probe() / "probe.json"

    def probe_weights(self) -> Path:
        return self.probe() / "probe.safetensors"

    def probe_real_stats(self) -> Path:
        return self.probe() / "real_stats.npz"

    def inception_real_features(self) -> Path:
        return self.results / "inception_real_features.npy"

    # -- DiT training --------------------------------------------------------------------------------------
    def stage(self, experiment: str, stage: str) -> Path:
        """Folder of one experiment's run of one curriculum stage: checkpoints/, final/, done.json, ledger.csv,
        train_log.csv, tensorboard/, fid_snapshots/ (train-dit) and fid.csv, fid_points/ (fid-points)."""
        return self.experiment(experiment) / "dit" / stage

    def stage_curves(self, experiment: str, stage: str) -> Path:
        """The stage's live training curves (TensorBoard event files; `curves`)."""
        return self.curves(self.stage(experiment, stage))

    def fid_snapshots(self, experiment: str, stage: str) -> Path:
        """EMA weights at the stage's FID-point steps, step_<global step>/ each (train-dit writes them)."""
        return self.stage(experiment, stage) / "fid_snapshots"

    def stage_fid(self, experiment: str, stage: str) -> Path:
        """The stage's FID-vs-compute points (fid-points writes them from fid_snapshots/)."""
        return self.stage(experiment, stage) / "fid.csv"

    def stage_done(self, experiment: str, stage: str) -> Path:
        return self.stage(experiment, stage) / "done.json"

    def stage_final(self, experiment: str, stage: str) -> Path:
        """The stage's final (EMA) weights, loadable with models.load_dit."""
        return self.stage(experiment, stage) / "final"

    def fid_curve(self, experiment: str) -> Path:
        return self.experiment(experiment) / "fid_curve.csv"

    # -- sampling and scoring --------------------------------------------------------------------------------
    def samples(self, experiment: str, suite: str) -> Path:
        return self.experiment(experiment) / "samples" / suite

    def samples_index(self, experiment: str, suite: str) -> Path:
        return self.samples(experiment, suite) / "samples.json"

    def metrics(self, experiment: str, backend: str) -> Path:
        return self.experiment(experiment) / "metrics" / f"{backend}.json"

    def metrics_units(self, experiment: str, backend: str) -> Path:
        """Per-video data behind a metrics JSON (eval/score.py: `units_path`)."""
        return units_path(self.metrics(experiment, backend))

    def compare(self, name: str) -> Path:
        """Work folder of `pyramid-repro compare` for a checkpoint named `name`."""
        return self.results / "compare" / name

    # -- the user study ---------------------------------------------------------------------------------------
    def studies(self) -> Path:
        """Folder of every user study of the run (`pyramid-repro study`)."""
        return self.results / "studies"

    def study(self, name: str) -> Path:
        """Folder of one user study: study.sqlite and videos/ (the browser-playable copies it serves)."""
        return self.studies() / name

    def study_db(self, name: str) -> Path:
        """The study's SQLite database: design, rater tokens and every vote."""
        return self.study(name) / "study.sqlite"

    def study_videos(self, name: str) -> Path:
        return self.study(name) / "videos"

    # -- bookkeeping -----------------------------------------------------------------------------------------
    @staticmethod
    def curves(training_folder: Path) -> Path:
        """The live training curves of a training job's folder (a DiT stage's or the VAE's, `--out` included):
        TensorBoard event files, one scalar per optimizer step (train/curves.py). `tensorboard --logdir
        results/<profile>` shows every job's."""
        return Path(training_folder) / "tensorboard"

    def ledger_glob(self) -> str:
        """Every GPU-hour ledger of the run (the VAE's and one per DiT stage)."""
        return str(self.results / "**" / "ledger*.csv")

    def logs(self, *parts: str) -> Path:
        return self.results.joinpath("logs", *parts)

    def benchmarks(self, *parts: str) -> Path:
        """Snakemake `benchmark:` files (wall time and memory per job)."""
        return self.results.joinpath("benchmarks", *parts)

    def report(self, name: str) -> Path:
        return self.reports / name
