"""The authors' MM-DiT layout and semantics (models/official.py): a tiny diffusers SD3Transformer2DModel, an
independent implementation with the release's key layout and, on one image with all text valid, the release's
semantics, gives the same velocity as the converted official-variant PyramidDiT."""

from __future__ import annotations

import pytest
import torch

from pyramid_repro.models import PyramidDiT
from pyramid_repro.models.official import load_sd3_layout, official_pos_table, sd3_to_suite, suite_kwargs_from_sd3

diffusers = pytest.importorskip("diffusers")

SD3 = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=8,
           num_attention_heads=2, joint_attention_dim=12, caption_projection_dim=16, pooled_projection_dim=10,
           pos_embed_max_size=12, qk_norm="rms_norm")


def _sd3(randomise: bool = True):
    torch.manual_seed(0)
    m = diffusers.SD3Transformer2DModel(**SD3)
    if randomise:  # every parameter and the position buffer: zero-initialised layers would hide mistakes
        with torch.no_grad():
            for t in list(m.parameters()) + [m.pos_embed.pos_embed]:
                t.copy_(torch.randn_like(t) * 0.3)
    return m.eval()


def _suite(sd3) -> PyramidDiT:
    kwargs = suite_kwargs_from_sd3(dict(sd3.config))
    m = PyramidDiT(**kwargs)
    m.load_state_dict(sd3_to_suite(sd3.state_dict(), kwargs["patch_size"], kwargs["in_channels"]), strict=True)
    return m.eval()


def test_position_table_is_sd3s():
    sd3 = _sd3(randomise=False)
    ours = official_pos_table(SD3["pos_embed_max_size"], SD3["sample_size"] // SD3["patch_size"], 16)
    torch.testing.assert_close(ours, sd3.pos_embed.pos_embed.float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(4, 6), (8, 12), (16, 24)], ids=["stage 1", "stage 2", "stage 3"])
def test_frame0_velocity_equals_diffusers_sd3(size):
    sd3 = _sd3()
    ours = _suite(sd3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, *size, generator=g)
    text, pooled = torch.randn(2, 5, 12, generator=g), torch.randn(2, 10, generator=g)
    t = torch.tensor([950.0, 120.0])
    with torch.no_grad():
        ref = sd3(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t).sample
        out = ours(history=[], current=x[:, :, None], timestep=t, tokens=text,
                   text_mask=torch.ones(2, 5, dtype=torch.bool), pooled=pooled, full_size=(16, 24))
    assert out.shape == (2, 4, 1, *size)
    torch.testing.assert_close(out[:, :, 0], ref, rtol=1e-4, atol=1e-4)
    assert ref.abs().mean() > 0.1  # a non-trivial velocity


def test_conversion_is_strict_and_the_folder_loads(tmp_path):
    sd3 = _sd3()
    state = sd3.state_dict()
    with pytest.raises(KeyError, match="have no place.*extra.weight"):
        sd3_to_suite({**state, "extra.weight": torch.zeros(1)}, 2, 4)
    with pytest.raises(KeyError, match="proj_out.bias"):
        sd3_to_suite({k: v for k, v in state.items() if k != "proj_out.bias"}, 2, 4)
    sd3.save_pretrained(tmp_path / "transformer")
    loaded = load_sd3_layout(tmp_path / "transformer")
    ref = _suite(sd3)
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_official_variant_refuses_what_it_cannot_do_exactly():
    m = _suite(_sd3())
    tok, mask, pooled = torch.randn(1, 5, 12), torch.ones(1, 5, dtype=torch.bool), torch.randn(1, 10)
    with pytest.raises(ValueError, match="KV cache is not exact for variant 'official'"):
        m.encode_context([], tok, mask, pooled, (8, 8))
    with pytest.raises(NotImplementedError, match="history frames"):
        m(history=[torch.randn(1, 4, 4, 4)], current=torch.randn(1, 4, 1, 8, 8), timestep=torch.ones(1),
          tokens=tok, text_mask=mask, pooled=pooled, full_size=(8, 8))
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        PyramidDiT(in_channels=4, patch_size=2, hidden_size=16, depth=1, num_heads=2, variant="official")
