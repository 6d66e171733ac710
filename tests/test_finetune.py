"""Fine-tuning an authors' release with the DiT trainer (docs/release.md "Fine-tuning a release"), for every release
record (releases.RELEASES) on a tiny random-weight fake of its folder: the synthetic world rendered at 64x64, 9
frames (the release's 8x8x8 VAE: 8x8 latents, 2 latent frames), encoded with the release's VAE and captioned with
its text encoders by the real commands (make-dataset, encode-latents, train-dit); the trainer's first model is the
release bit for bit, a few steps lower the loss, and the ledger marks the job as fine-tuning."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch
from release_fake import write_fake_release
from release_fake_flux import write_fake_miniflux_release

from pyramid_repro.cliutil import config_from_args
from pyramid_repro.releases import RELEASES

# one fake folder writer per release record: a new record needs its fake here (test_every_release_has_a_fake)
FAKES = {"sd3": write_fake_release, "miniflux": write_fake_miniflux_release}
STEPS = 16


def _overrides(base: Path, release: Path | str, steps: int = STEPS) -> list[str]:
    """--set options: the smoke profile at the release's geometry, one video stage, no FID points."""
    sets = [f"results={base}/results", f"release={release}", "data.height=64", "data.width=64", "data.frames=9",
            "data.synthetic={n_train: 8, n_val: 0, n_test: 0, n_images: 0}",
            "train.curriculum=[{name: video, kind: video, height: 64, width: 64, frames: 9, "
            f"steps: {steps}, batch_size: 4}}]",
            "train.match_compute_to=null", "train.share_image_stage=false", "train.fid_every=0",
            f"train.ckpt_every={steps}", "train.ema_decay=0.5", "train.lr=1.0e-3"]
    return [a for s in sets for a in ("--set", s)]


def test_every_release_has_a_fake():
    assert set(FAKES) == set(RELEASES)


@pytest.fixture(scope="module", params=sorted(RELEASES))
def finetuned(request, tmp_path_factory):
    """(release kind, release folder, the trainer's model before its first optimizer step, stage folder, config):
    one fine-tuning run through the commands' entry points."""
    from pyramid_repro.commands import encode_latents, make_dataset, train_dit
    from pyramid_repro.train import dit

    kind = RELEASES[request.param]
    base = tmp_path_factory.mktemp(f"finetune_{kind.name}")
    release = FAKES[kind.name](base / "release")
    sets = _overrides(base, release)
    common = ["--profile", "smoke", *sets]
    assert make_dataset.main([*common, "--workers", "1"]) == 0
    assert encode_latents.main(common) == 0
    first: dict = {}
    started = dit.StageLoop.started

    def capture(loop) -> None:  # after resume, before the first optimizer step
        model = loop.job.unwrap(loop.model)
        first.update(cls=type(model), state={k: v.detach().clone() for k, v in model.state_dict().items()})
        started(loop)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dit.StageLoop, "started", capture)
        assert train_dit.main([*common, "--experiment", "pyramid", "--stage", "video"]) == 0
    cfg = config_from_args(argparse.Namespace(profile="smoke", experiment="pyramid", overrides=sets[1::2]))
    return kind, release, first, cfg.layout.stage("pyramid", "video"), cfg


def test_first_training_step_starts_from_the_release_bit_for_bit(finetuned):
    """Every weight of the release file is in the trainer's model under the converter's name, none dropped,
    renamed or reinitialised, in the release's own class."""
    from pyramid_repro.releases import open_release

    kind, release, first, _, cfg = finetuned
    reference = open_release(release).load_transformer(cfg.release_resolution)
    assert first["cls"] is kind.model_class and type(reference) is kind.model_class
    ref, got = reference.state_dict(), first["state"]
    assert set(got) == set(ref)
    unequal = [k for k in ref if got[k].dtype != torch.float32 or not torch.equal(got[k], ref[k])]
    assert unequal == []


def test_fine_tuning_lowers_the_loss_and_books_as_fine_tuning(finetuned):
    """The final (EMA) weights have a lower flow-matching loss than the release on the same fixed batches of the
    training clips (8 micro-batches of 4 with fixed generators: stage, frame, timestep and noise are equal for
    both models); the stage's ledger row says finetune and names the release."""
    from pyramid_repro.flow import PyramidSchedule
    from pyramid_repro.models import load_dit
    from pyramid_repro.releases import open_release, text_encoder_for
    from pyramid_repro.train.dit import StageData, flow_matching_loss

    kind, release, _, stage, cfg = finetuned
    data = StageData.load(cfg, "video", text_encoder_for(cfg), torch.device("cpu"))
    schedule = PyramidSchedule.from_config(cfg.pyramid)
    size = tuple(data.latents.shape[-2:])

    def loss(model) -> float:
        model.eval()
        with torch.no_grad():
            return sum(float(flow_matching_loss(model, *data.micro_batch(4, schedule, cfg,
                                                                         torch.Generator().manual_seed(i)), size))
                       for i in range(8)) / 8

    before = loss(open_release(release).load_transformer(cfg.release_resolution))
    tuned = load_dit(stage / "final")
    assert type(tuned) is kind.model_class
    after = loss(tuned)
    print(f"{kind.name}: loss {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before, (kind.name, before, after)
    rows = list(csv.DictReader(open(stage / "ledger.csv")))
    assert [(r["kind"], r["release"]) for r in rows] == [("finetune", str(release))]


def test_release_that_is_not_a_release_folder_is_named(tmp_path, capsys):
    from pyramid_repro.cli import main

    folder = tmp_path / "my_checkpoint"
    folder.mkdir()
    assert main(["train-dit", "--profile", "smoke", "--experiment", "pyramid", "--stage", "video",
                 *_overrides(tmp_path, folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "release=" in err[0] and str(folder) in err[0], err


def test_memory_plan_measures_the_release_class(finetuned):
    """train/plan.py builds what the trainer trains: the release's class at its transformer's size (from its
    config.json, on the meta device), and plans no VAE job (a fine-tuning run trains none)."""
    from pyramid_repro.config import for_experiment, load_config
    from pyramid_repro.train.plan import meta_dit, plan_profile

    kind, _, first, _, cfg = finetuned
    model = meta_dit(cfg)
    assert type(model) is kind.model_class and model.training
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in first["state"].items()}
    # the plan resolves each experiment's config again (config.for_experiment): the release's geometry stays
    assert for_experiment(cfg, "fullseq").vae.latent_channels == kind.latent_channels != load_config(
        "smoke").vae.latent_channels
    rows = plan_profile(cfg, ["pyramid"], processes=1, memory=80e9, target="cuda")
    assert [(r.experiment, r.stage) for r in rows] == [("pyramid", "video")] and rows[0].fits


def test_equal_compute_is_refused_with_a_release_in_one_line():
    """train.match_compute_to counts FLOPs with model.* (flow/cost.py), which is not the release's architecture."""
    from pyramid_repro.config import ConfigError, load_config
    from pyramid_repro.train.dit import stage_steps

    cfg = load_config("smoke", {"release": "/releases/sd3", "train": {"match_compute_to": "pyramid"}},
                      experiment="fullseq")
    st = cfg.train.curriculum[-1]
    assert stage_steps(cfg, "pyramid", st) == st.steps  # the reference itself runs its own steps
    with pytest.raises(ConfigError, match=r"^train.match_compute_to='pyramid' with release='/releases/sd3'") as e:
        stage_steps(cfg, "fullseq", st)
    assert "\n" not in str(e.value)


def test_release_and_betas_enter_the_checkpoint_fingerprint_only_when_used():
    """A fine-tune never resumes a from-scratch checkpoint (or one of another release) and vice versa; without a
    release and with PyTorch's betas a stage fingerprints as before the keys existed (Config.run_keys_to_drop)."""
    from pyramid_repro.config import load_config
    from pyramid_repro.train.dit import stage_fingerprint

    st = load_config("smoke").train.curriculum[-1]
    fp = {name: stage_fingerprint(load_config("smoke", over), st) for name, over in {
        "scratch": {}, "default betas": {"train": {"betas": [0.9, 0.999]}},
        "authors' betas": {"train": {"betas": [0.9, 0.95]}}, "sd3": {"release": "/releases/sd3"},
        "miniflux": {"release": "/releases/miniflux"},
        "miniflux 768p": {"release": "/releases/miniflux", "release_resolution": "768p"}}.items()}
    assert fp["default betas"] == fp["scratch"]
    assert len({fp[k] for k in fp if k != "default betas"}) == len(fp) - 1, fp
