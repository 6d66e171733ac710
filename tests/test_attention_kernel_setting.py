"""model.attention_kernel (models/attention.py): one default that every DiT class of the registry reads, applied
by every place that builds or loads a DiT for a config (build_dit, load_dit, the release loader, sampling, FID
points); a runtime choice, so not in a saved config.json nor in a stage's checkpoint fingerprint; a bad value
fails at config load with the key named."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.models import attention, build_dit, load_dit
from pyramid_repro.models.registry import DIT_CLASSES

# small values for the constructor arguments the registered classes take; each class gets the ones it names
SMALL = {"in_channels": 4, "patch_size": 1, "hidden_size": 32, "depth": 1, "num_heads": 2, "text_dim": 8,
         "pooled_dim": 8, "pos_embed_max_size": 16, "pos_embed_base_size": 8, "depth_double": 1, "depth_single": 1,
         "axes_dims_rope": (4, 6, 6)}
OTHER = {"auto": "sdpa", "sdpa": "flex", "flex": "sdpa"}  # a kernel that is not the default


def _small(cls):
    names = inspect.signature(cls.__init__).parameters
    try:
        return cls(**{k: v for k, v in SMALL.items() if k in names})
    except Exception as err:  # a new class whose arguments SMALL does not cover
        raise AssertionError(f"{cls.__name__}: add small values for its constructor to SMALL ({err})") from err


@pytest.mark.parametrize("name", sorted(DIT_CLASSES))
def test_every_model_class_reads_the_one_default_and_load_dit_applies_the_kernel(name, tmp_path: Path):
    m = _small(DIT_CLASSES[name])
    assert m.attention_kernel == attention.DEFAULT_KERNEL
    m.save_pretrained(tmp_path / name)
    assert "attention_kernel" not in json.loads((tmp_path / name / "config.json").read_text()), \
        "the kernel is a runtime choice: not saved"
    assert load_dit(tmp_path / name).attention_kernel == attention.DEFAULT_KERNEL
    other = OTHER[attention.DEFAULT_KERNEL]
    loaded = load_dit(tmp_path / name, "cpu", other)
    assert type(loaded).__name__ == name and loaded.attention_kernel == other


def test_the_default_is_read_where_it_is_declared(monkeypatch):
    """Every class reads models/attention.py's DEFAULT_KERNEL through the base class (none keeps its own)."""
    from pyramid_repro.models.base import DiTModel

    for cls in DIT_CLASSES.values():
        assert issubclass(cls, DiTModel)
        assert all("attention_kernel" not in vars(c) for c in cls.__mro__ if c is not DiTModel), cls.__name__
    assert DiTModel.attention_kernel == attention.DEFAULT_KERNEL in attention.KERNELS


def test_build_dit_applies_the_config_kernel():
    assert build_dit(load_config("smoke"), 8, 8).attention_kernel == attention.DEFAULT_KERNEL
    for kernel in attention.KERNELS:
        assert build_dit(load_config("smoke", {"model": {"attention_kernel": kernel}}), 8, 8).attention_kernel \
            == kernel


def test_a_bad_kernel_fails_at_config_load_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.attention_kernel.*'flash'"):
        load_config("smoke", {"model": {"attention_kernel": "flash"}})
    with pytest.raises(ValueError, match="model.attention_kernel"):
        attention.set_kernel(build_dit(load_config("smoke"), 8, 8), "flash")


def test_the_kernel_is_not_part_of_a_stage_fingerprint():
    from pyramid_repro.train.dit import stage_fingerprint

    base = load_config("smoke")
    st = base.train.curriculum[-1]
    for kernel in attention.KERNELS:
        assert stage_fingerprint(load_config("smoke", {"model": {"attention_kernel": kernel}}), st) \
            == stage_fingerprint(base, st)
    assert stage_fingerprint(load_config("smoke", {"model": {"attention": "bidirectional"}}), st) \
        != stage_fingerprint(base, st)


class _Loaded(Exception):
    """Raised by a stub loader once it has seen the kernel it was asked for."""


def test_sampling_and_fid_points_load_with_the_config_kernel(monkeypatch, tmp_path: Path):
    """eval/sample.py (`sample`, and `compare`, which samples through it) and eval/fid_points.py pass the config's
    kernel to load_dit."""
    from pyramid_repro.eval import fid_points, sample

    seen: list[str] = []

    def stub(folder, device="cpu", kernel=attention.DEFAULT_KERNEL):
        seen.append(kernel)
        raise _Loaded

    monkeypatch.setattr(sample, "load_dit", stub)
    monkeypatch.setattr(fid_points, "load_dit", stub)
    cfg = load_config("smoke", {"model": {"attention_kernel": "sdpa"}, "results": str(tmp_path / "results")})
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with pytest.raises(_Loaded):
        sample.run(cfg, None, "standard", out=tmp_path / "out", checkpoint=ckpt)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "fid_point.json").write_text("{}")
    with pytest.raises(_Loaded):
        fid_points.score_point(cfg, snapshot, None, [], None, "cpu")
    assert seen == ["sdpa", "sdpa"]


@pytest.mark.parametrize("model", ["sd3", "miniflux"])
def test_the_release_loads_with_the_config_kernel(model, monkeypatch, tmp_path: Path):
    """eval/release.py load_release (sample and compare of the authors' release) for both released models, and
    sample_release passes the config's kernel to it."""
    from release_fake import write_fake_release
    from release_fake_flux import write_fake_miniflux_release

    from pyramid_repro.eval import release, sample

    write = write_fake_release if model == "sd3" else write_fake_miniflux_release
    root = write(tmp_path / "release")
    run = release.plan(root)
    dit, _, _ = release.load_release(run, "cpu", kernel="sdpa")
    assert dit.attention_kernel == "sdpa"
    assert release.load_release(run, "cpu")[0].attention_kernel == attention.DEFAULT_KERNEL

    seen: list[str] = []

    def stub(run, device, bf16=True, kernel=attention.DEFAULT_KERNEL):
        seen.append(kernel)
        raise _Loaded

    monkeypatch.setattr(release, "load_release", stub)
    cfg = load_config("smoke", {"model": {"attention_kernel": "flex"}})
    with pytest.raises(_Loaded):
        sample.sample_release(cfg, run, "standard", tmp_path / "out")
    assert seen == ["flex"]


def test_a_loaded_model_computes_with_its_kernel():
    """The attribute set by the loaders is what the forward pass uses (the dense SDPA mask on the CPU; `flex`
    builds a block mask)."""
    from pyramid_repro.models.attention import FlexMask

    m = build_dit(load_config("smoke", {"model": {"attention_kernel": "flex"}}), 8, 8)
    frames, text = torch.tensor([0, 0, 1, 1]), torch.ones(1, 2, dtype=torch.bool)
    assert isinstance(m._mask(frames, text, 6), FlexMask)
    assert isinstance(attention.set_kernel(m, "sdpa")._mask(frames, text, 6), torch.Tensor)
