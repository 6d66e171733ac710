"""Activation checkpointing (train.activation_checkpointing, models/base.py): the first round(r x n) blocks of each
block list recompute their activations in backward. Checkpointing changes what is kept, not what is computed: on
the CPU in fp32 the loss and every gradient are bit-identical with it on and off (tolerance 0: the recomputation runs
the same kernels on the same inputs), for the shared MM-DiT (PyramidDiT, OfficialPyramidDiT) and miniFLUX (two
block lists). FlexAttention has no CPU backward: its path is run with a differentiable reference kernel."""

from __future__ import annotations

import pytest
import torch

from pyramid_repro.models import OfficialPyramidDiT, PyramidDiT
from pyramid_repro.models.base import checkpointed_blocks
from pyramid_repro.models.miniflux import MiniFluxDiT


def _randomised(m: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():  # adaLN-Zero's zero layers would leave most gradients zero
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m.train()


def _models() -> dict[str, torch.nn.Module]:
    common = dict(in_channels=4, patch_size=1, hidden_size=32, num_heads=2, text_dim=8, pooled_dim=8)
    return {
        "PyramidDiT": PyramidDiT(depth=3, **common),
        "OfficialPyramidDiT": OfficialPyramidDiT(depth=3, pos_embed_max_size=16, pos_embed_base_size=8, **common),
        "MiniFluxDiT": MiniFluxDiT(in_channels=4, patch_size=2, hidden_size=32, num_heads=2, depth_double=2,
                                   depth_single=3, text_dim=8, pooled_dim=8, axes_dims_rope=(4, 6, 6)),
    }


def _inputs():
    g = torch.Generator().manual_seed(1)
    B = 2
    return dict(history=[torch.randn(B, 4, 4, 4, generator=g), torch.randn(B, 4, 8, 8, generator=g)],
                current=torch.randn(B, 4, 1, 8, 8, generator=g), timestep=torch.tensor([900.0, 30.0]),
                tokens=torch.randn(B, 3, 8, generator=g), text_mask=torch.tensor([[True, True, False]] * B),
                pooled=torch.randn(B, 8, generator=g), full_size=(8, 8))


def _loss_and_grads(m: torch.nn.Module, ratio: float, kernel: str = "sdpa"):
    m.set_activation_checkpointing(ratio)
    m.attention_kernel = kernel
    m.zero_grad(set_to_none=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        v = m(**_inputs())
    loss = (v.float() - 1.0).pow(2).mean()
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}, sum(saved)


def test_checkpointed_blocks_rule():
    assert [checkpointed_blocks(24, r) for r in (0, 0.25, 0.5, 0.75, 1.0)] == [0, 6, 12, 18, 24]
    assert checkpointed_blocks(3, 0.5) == 2 and checkpointed_blocks(1, 0.5) == 1  # half up
    assert checkpointed_blocks(8, 0.1) == 1 and checkpointed_blocks(16, 0.01) == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        checkpointed_blocks(24, 1.5)


@pytest.mark.parametrize("name", ["PyramidDiT", "OfficialPyramidDiT", "MiniFluxDiT"])
def test_same_loss_and_gradients_with_and_without_checkpointing(name):
    torch.manual_seed(0)
    m = _randomised(_models()[name])
    loss0, grads0, kept0 = _loss_and_grads(m, 0.0)
    assert len(grads0) > 10
    kept = [kept0]
    for ratio in (0.5, 1.0):
        loss, grads, kept_r = _loss_and_grads(m, ratio)
        assert torch.equal(loss, loss0), (ratio, float(loss - loss0))
        assert grads.keys() == grads0.keys()
        for k in grads0:
            assert torch.equal(grads[k], grads0[k]), (ratio, k, float((grads[k] - grads0[k]).abs().max()))
        kept.append(kept_r)
    # more blocks checkpointed, fewer activations kept for backward (checkpointing really acts)
    assert kept[0] > kept[1] > kept[2], kept


def test_checkpointing_is_not_saved_in_the_config(tmp_path):
    m = _models()["PyramidDiT"]
    m.set_activation_checkpointing(0.75)
    m.save_pretrained(tmp_path)
    assert "activation_checkpointing" not in (tmp_path / "config.json").read_text()
    assert PyramidDiT.from_pretrained(tmp_path).activation_checkpointing == 0.0


@pytest.mark.parametrize("name", ["PyramidDiT", "MiniFluxDiT"])
def test_flex_block_mask_through_checkpointing(name, monkeypatch):
    """The flex kernel's path under checkpointing: the block mask made once per forward goes through the
    checkpointed blocks and their recomputation. PyTorch's FlexAttention refuses autograd on the CPU (and runs on
    no meta tensors), so the kernel is replaced by a differentiable reference that applies the block mask's own
    mask_mod densely; on CUDA the compiled kernel runs this path."""
    from pyramid_repro.models import attention

    if attention.flex_attention is None:
        pytest.skip("this PyTorch has no FlexAttention")
    from torch.nn.attention.flex_attention import create_mask

    def reference_flex(q, k, v, block_mask):
        dense = create_mask(block_mask.mask_mod, q.shape[0], None, q.shape[2], k.shape[2], device=q.device)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense)

    monkeypatch.setattr(attention, "flex_attention", reference_flex)
    m = _randomised(_models()[name])
    loss0, grads0, _ = _loss_and_grads(m, 0.0, "flex")
    loss1, grads1, _ = _loss_and_grads(m, 1.0, "flex")
    assert not attention._FLEX_FAILED  # the flex path ran, no fallback to the dense one
    assert torch.equal(loss1, loss0)
    for k in grads0:
        assert torch.equal(grads1[k], grads0[k]), k
    loss_sdpa, grads_sdpa, _ = _loss_and_grads(m, 1.0, "sdpa")  # and both kernels agree
    torch.testing.assert_close(loss1, loss_sdpa, rtol=1e-5, atol=1e-6)


def test_stage_fingerprint_ignores_checkpointing_and_sharding():
    """Checkpointing and sharding change no arithmetic: toggling them resumes the stage's checkpoints."""
    from pyramid_repro.config import load_config
    from pyramid_repro.train.dit import stage_fingerprint

    cfg = load_config("tiny")
    st = cfg.train.curriculum[0]
    other = load_config("tiny", overrides={"train": {"activation_checkpointing": 0.75},
                                             "compute": {"sharding": "full"}})
    assert stage_fingerprint(other, other.train.curriculum[0]) == stage_fingerprint(cfg, st)
    changed = load_config("tiny", overrides={"train": {"lr": 0.5}})
    assert stage_fingerprint(changed, changed.train.curriculum[0]) != stage_fingerprint(cfg, st)


def test_measured_hash_ignores_the_settings_that_compute_the_same():
    """Switching the attention kernel or activation checkpointing leaves a run's metrics current (provenance)."""
    from pyramid_repro.config import load_config
    from pyramid_repro.provenance import measured_hash

    base = load_config("smoke")
    for over in ({"model": {"attention_kernel": "sdpa"}}, {"train": {"activation_checkpointing": 0.5}}):
        assert measured_hash(load_config("smoke", over)) == measured_hash(base)
    assert measured_hash(load_config("smoke", {"train": {"lr": 3e-4}})) != measured_hash(base)
