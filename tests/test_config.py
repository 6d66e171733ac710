"""Configuration: profiles load, the schema is generated from the typed tree, bad input is named."""

from __future__ import annotations

import pytest
import yaml

from pyramid_repro.cli import main as cli_main
from pyramid_repro.config import (
    PROFILES,
    ConfigError,
    load_config,
    load_config_file,
    profile_path,
    parse_override,
    save_config,
    schema_path,
    schema_yaml,
)
from pyramid_repro.experiments import experiments, get_experiment


def test_schema_file_is_the_generated_one():
    assert schema_path().read_text() == schema_yaml(), (
        "replication/schemas/config.schema.yaml is stale: run `pyramid-repro schema > "
        "replication/schemas/config.schema.yaml`"
    )


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("experiment", [None, *experiments()])
def test_every_profile_and_experiment_loads(profile, experiment):
    cfg = load_config(profile, experiment=experiment)
    assert cfg.profile == profile
    kinds = [s.kind for s in cfg.train.curriculum]
    if "release" in yaml.safe_load(profile_path(profile).read_text()):  # fine-tunes a release: video at its size
        assert kinds == ["video"] and cfg.release is None, "a fine-tuning profile leaves `release` to the user"
        assert (cfg.data.height, cfg.data.width) == (cfg.train.curriculum[0].height, cfg.train.curriculum[0].width)
    else:  # the paper's curriculum (Table 4)
        assert kinds == ["image", "video", "video"]


def test_default_profile_is_tiny():
    assert load_config().profile == "tiny"


def test_paper_profile_has_table4_hyperparameters():
    cfg = load_config("paper")
    steps = [s.steps for s in cfg.train.curriculum]
    batch = [s.batch_size for s in cfg.train.curriculum]
    hours = [s.paper_hours for s in cfg.train.curriculum]
    assert steps == [50_000, 200_000, 50_000] and batch == [1536, 768, 384] and hours == [12, 90, 60]
    assert (cfg.model.depth, cfg.model.hidden_size, cfg.model.num_heads, cfg.model.patch_size) == (24, 1536, 24, 2)
    assert (cfg.vae.spatial_compression, cfg.vae.temporal_compression, cfg.vae.latent_channels) == (8, 8, 16)


def test_finetune_profile_has_the_authors_recipe():
    """profiles/finetune.yaml: the authors' scripts/train_pyramid_flow.sh settings, and the defaults it overrides
    stay PyTorch's/the suite's (AdamW betas)."""
    t, p = load_config("finetune").train, load_config("finetune").pyramid
    assert (t.lr, t.warmup_steps, t.betas, t.weight_decay, t.grad_clip, t.precision) == (
        5e-5, 1000, [0.9, 0.95], 1e-4, 1.0, "bf16")
    assert p.history_corruption == pytest.approx([0.0, 1 / 3]) and p.stage_weights == [1.0] * p.stages
    assert load_config("tiny").train.betas == [0.9, 0.999]


def test_misspelt_key_is_rejected_and_named(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", {"vae": {"trian": {"steps": 3}}})
    assert "vae.trian" in str(e.value) and "train" in str(e.value)


def test_misspelt_key_in_a_profile_file_names_file_and_key(tmp_path, monkeypatch):
    import shutil

    from pyramid_repro.config import repo_root

    shutil.copytree(repo_root() / "replication", tmp_path / "replication")
    prof = tmp_path / "replication" / "profiles" / "tiny.yaml"
    tree = yaml.safe_load(prof.read_text())
    tree["model"]["hiden_size"] = 64
    prof.write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("PYRAMID_REPRO_ROOT", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_config("tiny")
    msg = str(e.value)
    assert "model.hiden_size" in msg and str(prof) in msg


def test_wrong_type_is_rejected_with_the_key():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", {"model": {"depth": "four"}})
    assert "model.depth" in str(e.value)


def test_unknown_profile_lists_the_choices():
    with pytest.raises(ConfigError) as e:
        load_config("huge")
    assert "huge" in str(e.value) and "tiny" in str(e.value)


def test_inconsistent_values_are_named():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", {"pyramid": {"end_sigmas": [0.667, 0.334]}})
    assert "pyramid.end_sigmas" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config("tiny", {"data": {"height": 30}})
    assert "divisible" in str(e.value)


def test_experiments_change_only_their_keys():
    base = load_config("tiny").to_dict()
    fs = load_config("tiny", experiment="fullseq")
    assert fs.pyramid.stages == 1 and fs.pyramid.end_sigmas == [0.0]
    bi = load_config("tiny", experiment="bidirectional").to_dict()
    diff = {k for k in base if base[k] != bi[k]}
    assert diff == {"model"} and bi["model"]["attention"] == "bidirectional"
    assert get_experiment("no_corrective_noise").trains is False
    assert get_experiment("no_corrective_noise").checkpoint_from == "pyramid"
    with pytest.raises(ConfigError, match="unknown experiment"):
        get_experiment("nope")


def test_override_parsing_and_roundtrip(tmp_path):
    assert parse_override("vae.train.steps=100") == {"vae": {"train": {"steps": 100}}}
    with pytest.raises(ConfigError):
        parse_override("novalue")
    cfg = load_config("smoke", parse_override("seed=7"))
    # YAML 1.2 numbers: an exponent without a decimal point is a float (PyYAML's YAML 1.1 reads a string)
    assert parse_override("train.lr=2e-3") == {"train": {"lr": 0.002}}
    assert load_config("smoke", parse_override("train.lr=2e-3")).train.lr == 0.002
    assert parse_override("train.lr=[1e-3, 3E2, .5, 1_000]")["train"]["lr"] == [0.001, 300.0, 0.5, 1000]
    assert parse_override("seed=1.2.3")["seed"] == "1.2.3"  # still a string, which validation then rejects
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config_file(tmp_path / "c.yaml")
    assert again == cfg and again.config_hash() == cfg.config_hash()


def test_config_hash_changes_with_a_value():
    assert load_config("tiny").config_hash() != load_config("tiny", {"seed": 1}).config_hash()


def test_cli_reports_config_errors(capsys):
    assert cli_main(["config", "--profile", "tiny", "--set", "modle.depth=2"]) == 2
    assert "modle" in capsys.readouterr().err
    assert cli_main(["--help"]) == 0


def test_shared_image_stage_owner_and_plan():
    """train.share_image_stage: the ablations that differ from `pyramid` only in what one frame never reads train
    no image stage of their own; fullseq (other schedule) and every video stage stay per experiment."""
    from pyramid_repro.experiments import stage_owner, training_experiments
    from pyramid_repro.workflow import Plan

    for exp in ("no_temporal_pyramid", "bidirectional", "no_history_corruption"):
        assert stage_owner(exp, "image", True) == "pyramid"
        assert stage_owner(exp, "image", False) == exp
        assert stage_owner(exp, "video", True) == exp
    assert stage_owner("fullseq", "image", True) == "fullseq"
    with pytest.raises(ConfigError, match="unknown experiment"):
        stage_owner("nope", "image", True)
    shared = Plan({"profile": "tiny"})
    assert shared.cfg["train"]["share_image_stage"] is True
    assert shared.previous_stage("bidirectional", "video_lowres") == [f"{shared.res}/pyramid/dit/image/done.json"]
    assert shared.previous_stage("bidirectional", "video_highres") == [
        f"{shared.res}/bidirectional/dit/video_lowres/done.json"]
    runs = {d for e in training_experiments() for d in shared.stages_done(e)}
    borrowers = [e for e in training_experiments() if stage_owner(e, "image", True) != e]
    assert len(runs) == len(shared.curriculum) * len(training_experiments()) - len(borrowers)
    own = Plan({"profile": "paper"})
    assert own.previous_stage("bidirectional", "video_lowres") == [f"{own.res}/bidirectional/dit/image/done.json"]


def test_experiments_that_resolve_to_one_configuration_are_named_when_a_run_is_planned(monkeypatch):
    """An ablation whose override is already the profile's default (uniform stage weights on tiny) would be
    trained again and compared as if it differed: planning the run names both experiments and the profile (a
    warning: on another profile the same entry is an arm of its own); the registry itself has no such pair."""
    from pyramid_repro import experiments as ex
    from pyramid_repro.workflow import Plan

    for profile in PROFILES:
        assert Plan({"profile": profile, "experiments": None}).identical_warnings == [], profile
    known = ex.experiments()
    default = load_config("tiny").pyramid.stage_weights
    uniform = ex.Experiment("uniform_weights", "stage weights as tiny's default", "pyramid", True, "uniform_weights",
                            {"pyramid": {"stage_weights": list(default)}})
    monkeypatch.setattr(ex, "_load", lambda: {**known, "uniform_weights": uniform})
    lines = Plan({"profile": "tiny", "experiments": ["pyramid", "fullseq", "uniform_weights"]}).identical_warnings
    assert len(lines) == 1 and "'pyramid' and 'uniform_weights'" in lines[0] and "profile 'tiny'" in lines[0], lines
    # where the profile's default differs, the same entry is an arm of its own
    paper = load_config("paper").pyramid.stage_weights
    assert paper != default
    assert Plan({"profile": "paper", "experiments": ["pyramid", "uniform_weights"]}).identical_warnings == []


def test_experiment_method_must_match_its_config():
    """experiments.yaml's `method` is checked against what the resolved config trains."""
    from pyramid_repro.config import ConfigError, load_config

    assert load_config("smoke", None, "fullseq").pyramid.stages == 1
    with pytest.raises(ConfigError, match="experiment 'pyramid' is method 'pyramid'.*pyramid.stages=1"):
        load_config("smoke", {"pyramid": {"stages": 1, "end_sigmas": [0.0], "stage_weights": [1.0]}}, "pyramid")


def test_misspelt_backend_is_rejected_at_load_time_with_key_value_and_names():
    from pyramid_repro.backend_specs import backend_names

    with pytest.raises(ConfigError) as e:
        load_config("tiny", {"eval": {"backends": ["synthetic", "fid-prob"]}})
    msg = str(e.value)
    assert "eval.backends" in msg and "'fid-prob'" in msg
    assert all(name in msg for name in backend_names())
    assert load_config("tiny", {"eval": {"backends": backend_names()}}).eval.backends == backend_names()


def test_backend_registry_facts():
    from pyramid_repro.backend_specs import BACKENDS, backend_spec, backends_filling, frame_backends

    # facts of the built-in backends, checked one by one so that adding a backend (docs/howto.md §2) breaks nothing
    assert {"synthetic", "fid-probe", "clean-fid"} <= set(frame_backends())
    assert not {"vbench", "evalcrafter"} & set(frame_backends())
    assert "evalcrafter" in backends_filling("table6") and backend_spec("vbench").needs_gpu
    assert not any(backend_spec(n).needs_gpu for n in ("synthetic", "fid-probe", "clean-fid", "evalcrafter"))
    assert all(name == spec.name for name, spec in BACKENDS.items())
    with pytest.raises(ConfigError, match="unknown backend 'vbnech'"):
        backend_spec("vbnech")


def test_schema_declares_the_draft_snakemake_validates_with():
    jsonschema = pytest.importorskip("jsonschema")

    sch = yaml.safe_load(schema_path().read_text())
    assert sch["$schema"] == jsonschema.Draft202012Validator.META_SCHEMA["$schema"]
