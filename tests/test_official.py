"""The authors' MM-DiT layout and semantics (models/official.py): a tiny diffusers SD3Transformer2DModel, an
independent implementation with the release's key layout and, on one image with all text valid, the release's
semantics, gives the same velocity as the converted OfficialPyramidDiT."""

from __future__ import annotations

import pytest
import torch

from pyramid_repro.models import OfficialPyramidDiT
from pyramid_repro.models.official import OFFICIAL_QK_NORM_EPS, load_sd3_layout, sd3_to_suite, suite_kwargs_from_sd3
from pyramid_repro.models.positions import crop_pos_table, history_pos_table, official_pos_table

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


def _suite(sd3) -> OfficialPyramidDiT:
    # diffusers' SD3 normalises queries and keys with eps 1e-6, the authors' release with OFFICIAL_QK_NORM_EPS
    kwargs = suite_kwargs_from_sd3(dict(sd3.config), qk_norm_eps=1e-6)
    m = OfficialPyramidDiT(**kwargs)
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
    assert loaded.blocks[0].vid.q_norm.eps == OFFICIAL_QK_NORM_EPS == 1e-5  # the authors' eps by default
    # built on the meta device and filled from the file: nothing may be left behind on meta
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in [*loaded.parameters(), *loaded.buffers()])
    ref = _suite(sd3)
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_official_model_refuses_what_it_cannot_do_exactly():
    m = _suite(_sd3())
    tok, mask, pooled = torch.randn(1, 5, 12), torch.ones(1, 5, dtype=torch.bool), torch.randn(1, 10)
    assert not m.kv_cache_exact
    with pytest.raises(ValueError, match="KV cache is not exact for the authors' model"):
        m.encode_context([], tok, mask, pooled, (8, 8))
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        OfficialPyramidDiT(in_channels=4, patch_size=2, hidden_size=16, depth=1, num_heads=2)


# --- history semantics (the authors' PatchEmbed3D and merge_input), against hand-derived expectations -------------

def _crop(table: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    return crop_pos_table(table, SD3["pos_embed_max_size"], gh, gw).reshape(gh, gw, -1)


def test_history_positions_are_the_current_crop_resized_bilinearly():
    table = torch.randn(1, 12 * 12, 16, generator=torch.Generator().manual_seed(0))
    crop = _crop(table, 8, 12)
    # half-pixel bilinear at factor 2 samples x = 2i + 0.5: the mean of each 2x2 block
    half = history_pos_table(table, 12, 8, 12, 4, 6).reshape(4, 6, -1)
    torch.testing.assert_close(half, crop.reshape(4, 2, 6, 2, -1).mean((1, 3)))
    # at factor 4, x = 4i + 1.5: the mean of the two middle rows/columns of each 4x4 block
    quarter = history_pos_table(table, 12, 8, 12, 2, 3).reshape(2, 3, -1)
    torch.testing.assert_close(quarter, crop.reshape(2, 4, 3, 4, -1)[:, 1:3, :, 1:3].mean((1, 3)))
    # a history frame of the current size: the crop itself, not the full grid's
    torch.testing.assert_close(history_pos_table(table, 12, 8, 12, 8, 12), crop.reshape(96, -1))
    with pytest.raises(ValueError, match="larger than the 4x6 current frame"):
        history_pos_table(table, 12, 4, 6, 8, 12)


def _history_call(m: OfficialPyramidDiT, history, current, t, monkeypatch):
    """Run the official model and record the frame indices its RoPE gets and the conditioning its adaLN reads."""
    import pyramid_repro.models.mmdit as mmdit

    seen = {}
    real = mmdit.rope_angles
    monkeypatch.setattr(mmdit, "rope_angles", lambda f, hd: seen.setdefault("frames", f) is None or real(f, hd))
    calls = []
    hook = m.blocks[0].vid.ada.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].clone()))
    g = torch.Generator().manual_seed(3)
    tok, pooled = torch.randn(1, 5, 12, generator=g), torch.randn(1, 10, generator=g)
    with torch.no_grad():
        out = m(history=history, current=current, timestep=t, tokens=tok, text_mask=torch.ones(1, 5, dtype=torch.bool),
                pooled=pooled, full_size=(16, 24))
        c_t = m.time_emb(m.time_proj(t)) + m.pooled_emb(pooled)
    hook.remove()
    return out, seen["frames"], calls, c_t


def test_history_tokens_rope_index_and_timestep_conditioning(monkeypatch):
    m = _suite(_sd3())
    g = torch.Generator().manual_seed(2)
    # the authors' stage-2 (middle) layout for the fourth frame: frames 0-1 at stage 0, frame 2 at stage 1
    history = [torch.randn(1, 4, 4, 6, generator=g), torch.randn(1, 4, 4, 6, generator=g),
               torch.randn(1, 4, 8, 12, generator=g)]
    current = torch.randn(1, 4, 1, 8, 12, generator=g)
    t = torch.tensor([400.0])
    # tokens: patch embedding + the current 4x6 grid's crop resized to each history frame's grid
    parts, _ = m._history_tokens(history, 8, 12, (4, 6))
    for hf, part in zip(history, parts):
        gh, gw = hf.shape[-2] // 2, hf.shape[-1] // 2
        want = m._tokens(hf) + history_pos_table(m.pos_table, 12, 4, 6, gh, gw)
        torch.testing.assert_close(part, want)
    out, frames, calls, c_t = _history_call(m, history, current, t, monkeypatch)
    # RoPE: latent frame index over the history, oldest = 0; the current frame comes next (3)
    assert frames.tolist() == [0] * 6 + [1] * 6 + [2] * 24 + [3] * 24
    # every video token (history too) is modulated by the current timestep's conditioning
    assert len(calls) == 2
    for c in calls:
        torch.testing.assert_close(c, c_t)
    assert out.shape == current.shape and torch.isfinite(out).all()
    # the history is read: changing the oldest frame changes the velocity
    changed = [history[0] + 1.0] + history[1:]
    out2, *_ = _history_call(m, changed, current, t, monkeypatch)
    assert (out2 - out).abs().max() > 1e-3


def test_official_mask_lets_text_see_frame0_and_video_see_the_past():
    m = _suite(_sd3())
    frames = torch.tensor([0, 0, 1, 1, 2, 2])
    valid = torch.tensor([[True, True, False]])
    dense = m._mask(frames, valid, 9)
    dense = dense.dense() if hasattr(dense, "dense") else dense
    d = dense[0, 0].int()
    T, F0, F1, F2 = slice(0, 3), slice(3, 5), slice(5, 7), slice(7, 9)
    assert d[0:2, 0:2].all() and d[0:2, F0].all()  # valid text sees valid text and frame 0
    assert not d[0:2, F1].any() and not d[0:2, F2].any()  # ... and no later frame
    assert not d[:, 2][torch.arange(9) != 2].any()  # nobody reads the padded text token
    assert d[F1, T][:, :2].all() and d[F1, F0].all() and d[F1, F1].all() and not d[F1, F2].any()
    assert d[F2, 3:].all()
