"""Export of a model fine-tuned from a release back into the release's layout (releases.py `ReleaseKind.to_release`,
`export_release`, `pyramid-repro export`): the converters both ways are exact, strict and name what they cannot
place; an exported folder loads with the suite's release loader as the same release with the same weights and
velocities. Tiny fake releases of every kind (tests/release_fake*.py), nothing downloaded."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from release_fake import write_fake_release, write_fake_transformer
from release_fake_flux import write_fake_miniflux_release, write_fake_miniflux_transformer

from pyramid_repro import cli, releases
from pyramid_repro.models.base import read_release_folder
from pyramid_repro.models.dit import PyramidDiT

# one fake of each release: (transformer folder writer, whole release folder writer)
FAKES = {"sd3": (write_fake_transformer, write_fake_release),
         "miniflux": (write_fake_miniflux_transformer, write_fake_miniflux_release)}
KINDS = list(releases.RELEASES)


def test_every_release_has_a_fake():
    assert set(FAKES) == set(releases.RELEASES)


@pytest.fixture(scope="module", params=KINDS)
def release_state(request, tmp_path_factory):
    """(kind, the release transformer's config.json, its state dict) as the file has them."""
    kind = releases.RELEASES[request.param]
    folder = FAKES[kind.name][0](tmp_path_factory.mktemp(kind.name) / "diffusion_transformer_384p")
    config, state = read_release_folder(folder, "a fake")
    return kind, config, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_release_to_suite_to_release_is_the_identity(release_state, dtype):
    kind, config, state = release_state
    state = {k: v.to(dtype) for k, v in state.items()}
    suite = kind.state_from_release(state, config)
    kwargs = kind.kwargs_from_config(config)
    back, back_config = kind.to_release(suite, kwargs, base=config)
    assert set(back) == set(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert back_config == config  # the release's own config.json, every key kept
    # without the release's config.json: written from the model's arguments, which read back the same
    fresh = kind.to_release(suite, kwargs)[1]
    assert kind.kwargs_from_config(fresh) == kwargs and kind.is_config(fresh)
    assert {k: fresh[k] for k in config if k in fresh} == {k: config[k] for k in config if k in fresh}


def test_an_unplaceable_key_or_a_wrong_shape_is_named(release_state):
    kind, config, state = release_state
    suite = kind.state_from_release(state, config)
    kwargs = kind.kwargs_from_config(config)
    with pytest.raises(KeyError, match="blocks.0.planted.weight"):
        kind.to_release({**suite, "blocks.0.planted.weight": torch.zeros(3)}, kwargs)
    with pytest.raises(KeyError, match="final.bias"):
        kind.to_release({k: v for k, v in suite.items() if k != "final.bias"}, kwargs)
    with pytest.raises(ValueError, match="final.bias"):
        kind.to_release({**suite, "final.bias": torch.zeros(3)}, kwargs)
    # the converter alone is strict too: a key it cannot place is a KeyError naming it
    with pytest.raises(KeyError, match="planted"):
        kind.state_to_release({**suite, "planted.weight": torch.zeros(3)}, kwargs)
    with pytest.raises(ValueError, match="num_layers|depth"):  # the release's config.json disagrees
        kind.to_release(suite, kwargs, base={**config, "num_layers": config["num_layers"] + 1})


# --- export end to end ------------------------------------------------------------------------------------------


def _velocity(model, seed: int = 3) -> torch.Tensor:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    history = [torch.randn(1, c.in_channels, 4, 4, generator=g)]
    current = torch.randn(1, c.in_channels, 1, 8, 8, generator=g)
    enc, pooled = torch.randn(1, 5, c.text_dim, generator=g), torch.randn(1, c.pooled_dim, generator=g)
    mask = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        return model(history, current, torch.tensor([500.0]), enc, mask, pooled, (8, 8))


@pytest.fixture(scope="module", params=KINDS)
def tuned(request, tmp_path_factory):
    """(release, a checkpoint of its 384p transformer with perturbed weights saved as train-dit saves it, with a
    train_config.yaml naming the release)."""
    tmp = tmp_path_factory.mktemp(f"tuned-{request.param}")
    rel = releases.find_release(FAKES[request.param][1](tmp / "release"))
    model = rel.load_transformer("384p")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ck = tmp / "final"
    model.save_pretrained(ck)
    (ck / "train_config.yaml").write_text(yaml.safe_dump({"release": str(rel.root), "release_resolution": "384p"}))
    return rel, ck


def test_export_loads_back_as_the_same_release(tuned, tmp_path, capsys):
    rel, ck = tuned
    out = tmp_path / "exported"
    assert cli.main(["export", "--checkpoint", str(ck), "--to", str(out)]) == 0
    assert rel.kind.pipeline_model_name in capsys.readouterr().out
    back = releases.find_release(out)
    assert back is not None and back.kind is rel.kind
    back.check("384p")  # the VAE and text folders beside it
    folder = back.transformer("384p")
    assert json.loads((folder / "config.json").read_text()) == json.loads(
        (rel.transformer("384p") / "config.json").read_text())
    saved = releases.RELEASES[rel.kind.name].model_class.from_pretrained(ck)
    got = back.load_transformer("384p")
    want, have = saved.state_dict(), got.state_dict()
    assert set(want) == set(have) and all(torch.equal(want[k], have[k]) for k in want)
    v = _velocity(got)
    assert torch.equal(v, _velocity(saved.eval()))
    assert not torch.allclose(v, _velocity(rel.load_transformer("384p")), atol=1e-4)  # the tuning is exported
    assert json.loads((out / releases.EXPORT_RECORD).read_text())["kind"] == rel.kind.name


def _refusal(capsys, argv: list[str]) -> str:
    assert cli.main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_export_refuses_with_one_line(tuned, tmp_path, capsys):
    rel, ck = tuned
    own = tmp_path / "own"
    PyramidDiT(in_channels=16, patch_size=2, hidden_size=16, depth=1, num_heads=2, text_dim=8,
               pooled_dim=8).save_pretrained(own)
    assert "PyramidDiT" in _refusal(capsys, ["--checkpoint", str(own), "--to", str(tmp_path / "a")])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "note.txt").write_text("mine")
    assert "not empty" in _refusal(capsys, ["--checkpoint", str(ck), "--to", str(busy)])
    assert cli.main(["export", "--checkpoint", str(ck), "--to", str(busy), "--force", "--link", "symlink"]) == 0
    assert (busy / "note.txt").read_text() == "mine" and (busy / releases.VAE_FOLDER).is_symlink()
    gone = tmp_path / "gone"
    assert "does not exist" in _refusal(capsys, ["--checkpoint", str(ck), "--to", str(tmp_path / "b"),
                                                 "--release", str(gone)])
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ck.iterdir():
        if f.name != "train_config.yaml":
            (bare / f.name).symlink_to(f)
    assert "--release" in _refusal(capsys, ["--checkpoint", str(bare), "--to", str(tmp_path / "c")])
    assert "release folder itself" in _refusal(capsys, ["--checkpoint", str(ck), "--to", str(rel.root), "--force"])
