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

from dataclasses import dataclass
from pathlib import Path

from pyramid_repro.base import default_profile

REPORT_FILES = ("table1.pdf", "table1.csv", "table1.md", "table5.pdf", "table5.csv", "fid_convergence.pdf",
                "fid_convergence.csv", "fid_convergence.txt", "ablations.pdf", "ablations.csv", "gpu_hours.pdf",
                "gpu_hours.csv", "claims.pdf", "claims.csv", "claims.md")
EVALCRAFTER_REPORT_FILES = ("table6.pdf", "table6.csv")  # only when an `evalcrafter` backend is scored
# `pyramid-repro study report`: the user study (not part of the main target; workflows/rules/study.smk)
USER_STUDY_REPORT_FILES = ("user_study.pdf", "user_study.csv", "user_study.md")


def units_path(metrics_json: Path) -> Path:
    """The per-video data file beside a metrics JSON: metrics/<backend>.json -> metrics/<backend>.units.npz."""
    return Path(metrics_json).with_suffix(".units.npz")


@dataclass(frozen=True)
class Layout:
    """Paths of one profile's run: `results` = <results>/<profile>, `reports` = its reports folder."""

    results: Path
    reports: Path

    @staticmethod
    def of(cfg) -> "Layout":
        """The layout of a resolved Config (its `results`, `reports` and `profile`)."""
        reports = Path(cfg.reports)
        if cfg.profile != default_profile():
            reports = reports / cfg.profile
        return Layout(Path(cfg.results) / cfg.profile, reports)

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
        return self.results / experiment / "dit" / stage

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
        return self.results / experiment / "fid_curve.csv"

    # -- sampling and scoring --------------------------------------------------------------------------------
    def samples(self, experiment: str, suite: str) -> Path:
        return self.results / experiment / "samples" / suite

    def samples_index(self, experiment: str, suite: str) -> Path:
        return self.samples(experiment, suite) / "samples.json"

    def metrics(self, experiment: str, backend: str) -> Path:
        return self.results / experiment / "metrics" / f"{backend}.json"

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
