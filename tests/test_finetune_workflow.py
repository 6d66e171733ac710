"""Fine-tuning one of the authors' releases through the workflow (docs/release.md §9): the plan with `release` set,
the smoke workflow end to end on a fake release (tests/release_fake.py), and `compare` of the fine-tuned
checkpoint beside the release's own row, paired on the same prompts and seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pyramid_repro.config import ConfigError
from pyramid_repro.release_specs import RELEASE_METHOD, VAE_FOLDER
from pyramid_repro.models.registry import dit_class
from pyramid_repro.releases import RELEASES

ROOT = Path(__file__).resolve().parents[1]

# the smallest run the release's 8x VAE allows: 64x64-pixel clips of 9 frames (8x8 latents, 2 latent frames), two
# curriculum stages of 2 steps (the second starts from the first's final/), the one experiment a release fine-tunes,
# 2 prompts, one scoring backend, a probe of 3 steps
SIZE = {"height": 64, "width": 64}
FINETUNE = {
    "experiments": ["pyramid"],
    "data": {**SIZE, "frames": 9, "synthetic": {"n_train": 8, "n_val": 4, "n_test": 4, "n_images": 8}},
    "vae": {"eval_clips": 2},
    "train": {"curriculum": [{"name": "image", "kind": "image", **SIZE, "frames": 1, "steps": 2, "batch_size": 2},
                             {"name": "video", "kind": "video", **SIZE, "frames": 9, "steps": 2, "batch_size": 2}],
              "fid_every": 0, "share_image_stage": False, "match_compute_to": None},
    "eval": {"max_prompts": 2, "probe_steps": 3, "backends": ["synthetic"]},
}


@pytest.fixture(scope="module")
def fake_release(tmp_path_factory) -> Path:
    from release_fake import write_fake_release

    return write_fake_release(tmp_path_factory.mktemp("release") / "pyramid-flow-sd3")


def test_plan_with_release_takes_its_vae_and_only_the_experiments_it_can_fine_tune(tmp_path):
    """No VAE is trained: the latent rules depend on the release's causal_video_vae/config.json; the experiments
    that change the releases' method are left out with one warning line; a folder that is no release fails at
    planning, naming `release`."""
    from pyramid_repro.experiments import experiments
    from pyramid_repro.workflow import Plan

    rel = tmp_path / "rel"
    (rel / VAE_FOLDER).mkdir(parents=True)
    (rel / VAE_FOLDER / "config.json").write_text("{}")
    plan = Plan({"profile": "smoke", "release": str(rel), "experiments": "all"})
    assert plan.vae_input() == str(rel / VAE_FOLDER / "config.json")
    assert plan.eval_vae_args().endswith(str(rel / VAE_FOLDER))
    left_out = [e for e in experiments() if e not in plan.experiments]
    assert "pyramid" in plan.experiments and "fullseq" in left_out
    for name in left_out:  # each left out for a key the releases fix, named on the one line
        assert f"{name}: " in plan.release_warnings[0] and any(k in plan.release_warnings[0] for k in RELEASE_METHOD)
    assert len(plan.release_warnings) == 1 and "\n" not in plan.release_warnings[0]
    assert plan.trained == [e for e in plan.trained if e in plan.experiments]
    own = Plan({"profile": "smoke"})
    assert own.vae_input() == own.paths.vae_normalization() and own.eval_vae_args() == ""
    assert own.release_warnings == [] and own.experiments == list(experiments())
    with pytest.raises(ConfigError, match=r"release='.*nothing'.*not a Pyramid Flow release folder"):
        Plan({"profile": "smoke", "release": str(tmp_path / "nothing")})
    with pytest.raises(ConfigError, match="none of the experiments fullseq"):
        Plan({"profile": "smoke", "release": str(rel), "experiments": ["fullseq"]})


def test_finetune_workflow_end_to_end(fake_release: Path, tmp_path: Path, monkeypatch):
    """The smoke workflow with `release` set, from a fake release folder to reports/smoke/table1.pdf; then `compare`
    of the release and of the fine-tuned checkpoint: its row is named after the release, sampled with the release's
    preset, and set beside the release's row with a paired difference."""
    from pyramid_repro.base import OVERRIDES_ENV
    from pyramid_repro.commands.compare import main as compare_main
    from pyramid_repro.eval.method import TRAIN_CONFIG, read_train_config
    from pyramid_repro.workflow import Plan

    config = {**FINETUNE, "release": str(fake_release), "results": f"{tmp_path}/results",
              "reports": f"{tmp_path}/reports"}
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config))
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile",
                        str(tmp_path / "finetune.yaml"), "--config", "profile=smoke", "--",
                        f"{tmp_path}/reports/smoke/table1.pdf"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYRAMID_REPRO_ROOT": str(ROOT)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    res = tmp_path / "results" / "smoke"
    assert (tmp_path / "reports" / "smoke" / "table1.pdf").is_file()
    assert not (res / "vae" / "final").exists(), "a fine-tune trains no VAE"
    vae_eval = json.loads((res / "vae" / "eval.json").read_text())
    assert vae_eval["vae_kind"] == "official" and vae_eval["vae_folder"] == str(fake_release / VAE_FOLDER)
    final = res / "pyramid" / "dit" / "video" / "final"
    saved = read_train_config(final / TRAIN_CONFIG)
    assert saved["release"] == str(fake_release) and saved["vae"]["latent_channels"] == 16
    # what was trained is the release's own class, not the suite's MM-DiT
    assert dit_class(json.loads((final / "config.json").read_text())) is RELEASES["sd3"].model_class
    samples = json.loads((res / "pyramid" / "samples" / "synthetic" / "samples.json").read_text())
    assert samples["model"].startswith("fine-tuned SD3 release 384p (pyramid, 4 steps; official-t2v")
    assert samples["protocol"]["width"] == 64 and samples["protocol"]["frames"] == 9
    assert len(samples["samples"]) == 2 and all(s["batch_size"] == 1 for s in samples["samples"])
    assert [m.name for m in (res / "pyramid" / "metrics").glob("*.json")] == ["synthetic.json"]

    # compare: the release at the run's size (the pairing needs the same protocol), then the fine-tuned checkpoint
    monkeypatch.setenv(OVERRIDES_ENV, Plan({"profile": "smoke", **config}).overrides_json)
    base = ["--profile", "smoke", "--backend", "synthetic"]
    assert compare_main([*base, "--checkpoint", str(fake_release), "--size", "64x64", "--latent-frames", "2"]) == 0
    assert compare_main([*base, "--checkpoint", str(final)]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "reports" / "smoke" / "compare_finetuned-384p-pyramid.csv")
    models = list(table["model"])
    tuned = next(m for m in models if m.startswith("fine-tuned SD3 release 384p (pyramid, 4 steps"))
    release_row = next(m for m in models if m.startswith("Pyramid Flow release 384p"))
    assert models.index(release_row) + 1 == models.index(tuned)
    delta = table[table["model"] == "Δ finetuned-384p-pyramid − release-384p"].iloc[0]
    assert "total: paired" in delta["note"] and delta["total_lo"] <= delta["total"] <= delta["total_hi"]
    assert "official-t2v" in table[table["model"] == tuned].iloc[0]["method"]


FAKE_WRITERS = {"sd3": ("release_fake", "write_fake_release"),
                "miniflux": ("release_fake_flux", "write_fake_miniflux_release")}


@pytest.mark.parametrize("kind", list(RELEASES))
def test_a_finetuned_checkpoint_carries_the_release_and_its_sampler(kind: str, tmp_path: Path):
    """A suite checkpoint whose train_config.yaml names a release is sampled as that release (its preset, name and
    label), with the profile's sampler only when eval.release_sampler asks; any other checkpoint is not; a release
    folder that has gone is an error naming the train_config.yaml. Every release of releases.RELEASES (a fake of
    its layout: FAKE_WRITERS)."""
    import importlib

    from pyramid_repro.config import load_config, save_config
    from pyramid_repro.eval.method import TRAIN_CONFIG
    from pyramid_repro.eval.release import PRESETS, settle_finetuned
    from pyramid_repro.releases import apply_release, open_release

    module, writer = FAKE_WRITERS[kind]
    fake_release = getattr(importlib.import_module(module), writer)(tmp_path / "release")
    k = RELEASES[kind]
    cfg = apply_release(load_config("smoke", {**FINETUNE, "release": str(fake_release)}))
    final = tmp_path / "results" / "pyramid" / "dit" / "video" / "final"
    open_release(fake_release).load_transformer("384p").save_pretrained(final)
    save_config(cfg, final / TRAIN_CONFIG)
    mine = load_config("smoke", FINETUNE)  # the profile alone: the release comes from the checkpoint
    c, run, label = settle_finetuned(mine, final, "pyramid")
    assert c.release == str(fake_release) and c.vae.latent_channels == k.latent_channels and run.kind is k
    assert run.preset == PRESETS["official-t2v"] and run.name == f"finetuned-{k.folder_prefix}384p-pyramid"
    assert run.label.startswith(f"fine-tuned {k.label} 384p (pyramid, 4 steps; official-t2v, 64x64, 2 latent")
    assert run.release_name == f"release-{k.folder_prefix}384p" and PRESETS["official-t2v"].describe() in label
    steps = mine.pyramid.sampler.steps_first_frame
    _, own, label = settle_finetuned(load_config("smoke", {**FINETUNE, "eval": {"release_sampler": "profile"}}),
                                     final, "pyramid")
    assert own.preset.name == "profile-sampler" and list(own.preset.steps_first_frame) == steps
    assert own.preset.negative_prompt == "" and not own.preset.official_conversions and "profile-sampler" in label
    (final / TRAIN_CONFIG).write_text((final / TRAIN_CONFIG).read_text().replace(
        f"release: {fake_release}", "release: null"))
    assert settle_finetuned(mine, final, "pyramid") is None
    (final / TRAIN_CONFIG).write_text((final / TRAIN_CONFIG).read_text().replace(
        "release: null", f"release: {tmp_path / 'moved'}"))
    with pytest.raises(ConfigError, match=f"{TRAIN_CONFIG}: release="):
        settle_finetuned(mine, final, "pyramid")
