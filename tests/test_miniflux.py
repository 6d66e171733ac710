"""The authors' miniFLUX release (models/miniflux.py, eval/release.py; docs/release.md "miniFLUX"): strict loading
of tiny random transformers in the release's layout, the velocity against an independent reference written here
from the release's semantics (their PyramidFluxTransformer's forward, SDPA path), negative controls, the two text
encoders, and `sample` / `compare` on a fake miniFLUX release folder. No real weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from release_fake_flux import TINY, fake_state, write_fake_miniflux_release, write_fake_miniflux_transformer

from pyramid_repro.config import ConfigError
from pyramid_repro import releases
from pyramid_repro.eval import release
from pyramid_repro.models import miniflux
from pyramid_repro.models.miniflux import MiniFluxDiT, load_miniflux_layout, release_to_suite
from pyramid_repro.models.registry import load_dit

# --- an independent reference: the release's forward, written from their code's semantics ----------------------


def _lin(sd: dict, x: torch.Tensor, name: str) -> torch.Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _ln(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6) * w


def _rope_matrices(ids: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """(N, head_dim/2, 2, 2) rotation matrices [[cos, -sin], [sin, cos]] per axis, concatenated (their EmbedND)."""
    mats = []
    for a, d in enumerate(axes):
        omega = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = ids[:, a].double()[:, None] * omega[None]
        mats.append(torch.stack([ang.cos(), -ang.sin(), ang.sin(), ang.cos()], -1).view(len(ids), -1, 2, 2))
    return torch.cat(mats, dim=1).float()


def _rotate(x: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """their apply_rope on (B, N, heads, d): pairs (x0, x1) -> matrix @ (x0, x1)."""
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    m = mats[None, :, None]  # (1, N, 1, d/2, 2, 2)
    return (m[..., 0] * x_[..., 0] + m[..., 1] * x_[..., 1]).reshape(x.shape)


def reference_velocity(sd: dict, cfg: dict, clips: list[torch.Tensor], t: torch.Tensor, enc: torch.Tensor,
                       enc_mask: torch.Tensor, pooled: torch.Tensor, interp_history: bool = True,
                       first_time_index: int = 0) -> torch.Tensor:
    """Their PyramidFluxTransformer.forward for one stage: `clips` = history clips then the current one, each
    (B, C, T, h, w). interp_history / first_time_index: knobs for negative controls only."""
    heads, hd = cfg["num_attention_heads"], cfg["attention_head_dim"]
    B, L = enc.shape[:2]
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    e = t[:, None].float() * freqs[None]
    e = torch.cat([torch.cos(e), torch.sin(e)], -1)  # flip_sin_to_cos
    temb = _lin(sd, F.silu(_lin(sd, e, "time_text_embed.timestep_embedder.linear_1")),
                "time_text_embed.timestep_embedder.linear_2")
    temb = temb + _lin(sd, F.silu(_lin(sd, pooled, "time_text_embed.text_embedder.linear_1")),
                       "time_text_embed.text_embedder.linear_2")
    ctx = _lin(sd, enc, "context_embedder")
    # RoPE ids (their _prepare_image_ids): time stamps counted over the clips, rows/columns of the current grid,
    # linearly interpolated for a smaller grid
    th, tw = clips[-1].shape[-2] // 2, clips[-1].shape[-1] // 2
    ids, start = [], first_time_index
    for clip in clips:
        T, h, w = clip.shape[2], clip.shape[3] // 2, clip.shape[4] // 2
        i = torch.zeros(T, h, w, 3)
        i[..., 0] += torch.arange(start, start + T)[:, None, None]
        hp = F.interpolate(torch.arange(th)[None, None].float(), h, mode="linear")[0, 0] \
            if (h != th and interp_history) else torch.arange(h).float()
        wp = F.interpolate(torch.arange(tw)[None, None].float(), w, mode="linear")[0, 0] \
            if (w != tw and interp_history) else torch.arange(w).float()
        i[..., 1] += hp[None, :, None]
        i[..., 2] += wp[None, None, :]
        ids.append(i.reshape(-1, 3))
        start += T
    all_ids = torch.cat([torch.zeros(L, 3), *ids])
    mats = _rope_matrices(all_ids, cfg["axes_dims_rope"])
    # attention mask: same id (text: 0 where padded) and time stamp of the key <= the query's (text: 0)
    tok = torch.cat([torch.where(enc_mask.bool(), 1, 0), torch.ones(B, len(all_ids) - L, dtype=torch.long)], 1)
    order = all_ids[:, 0]
    mask = (tok[:, None, :, None] == tok[:, None, None, :]) & (order[:, None] >= order[None, :])[None, None]
    x = torch.cat([rearrange(c, "b c t (h p) (w q) -> b (t h w) (p q c)", p=2, q=2) for c in clips], 1)
    x = _lin(sd, x, "x_embedder")

    def heads_of(y):
        return y.view(B, -1, heads, hd)

    def attention(q, k, v):
        q, k = _rotate(q, mats), _rotate(k, mats)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return o.transpose(1, 2).flatten(2)

    def ff(y, name):
        return _lin(sd, F.gelu(_lin(sd, y, f"{name}.net.0.proj"), approximate="tanh"), f"{name}.net.2")

    for i in range(cfg["num_layers"]):
        b = f"transformer_blocks.{i}."
        m = _lin(sd, F.silu(temb), b + "norm1.linear").chunk(6, 1)
        mc = _lin(sd, F.silu(temb), b + "norm1_context.linear").chunk(6, 1)
        nx = _ln(x) * (1 + m[1][:, None]) + m[0][:, None]
        nc = _ln(ctx) * (1 + mc[1][:, None]) + mc[0][:, None]
        q = _rms(heads_of(_lin(sd, nx, b + "attn.to_q")), sd[b + "attn.norm_q.weight"])
        k = _rms(heads_of(_lin(sd, nx, b + "attn.to_k")), sd[b + "attn.norm_k.weight"])
        v = heads_of(_lin(sd, nx, b + "attn.to_v"))
        qc = _rms(heads_of(_lin(sd, nc, b + "attn.add_q_proj")), sd[b + "attn.norm_added_q.weight"])
        kc = _rms(heads_of(_lin(sd, nc, b + "attn.add_k_proj")), sd[b + "attn.norm_added_k.weight"])
        vc = heads_of(_lin(sd, nc, b + "attn.add_v_proj"))
        o = attention(torch.cat([qc, q], 1), torch.cat([kc, k], 1), torch.cat([vc, v], 1))
        oc, ox = o[:, :L], o[:, L:]
        x = x + m[2][:, None] * _lin(sd, ox, b + "attn.to_out.0")
        x = x + m[5][:, None] * ff(_ln(x) * (1 + m[4][:, None]) + m[3][:, None], b + "ff")
        ctx = ctx + mc[2][:, None] * _lin(sd, oc, b + "attn.to_add_out")
        ctx = ctx + mc[5][:, None] * ff(_ln(ctx) * (1 + mc[4][:, None]) + mc[3][:, None], b + "ff_context")
    hs = torch.cat([ctx, x], 1)
    for i in range(cfg["num_single_layers"]):
        b = f"single_transformer_blocks.{i}."
        shift, scale, gate = _lin(sd, F.silu(temb), b + "norm.linear").chunk(3, 1)
        n = _ln(hs) * (1 + scale[:, None]) + shift[:, None]
        mlp = F.gelu(_lin(sd, n, b + "proj_mlp"), approximate="tanh")
        q = _rms(heads_of(_lin(sd, n, b + "attn.to_q")), sd[b + "attn.norm_q.weight"])
        k = _rms(heads_of(_lin(sd, n, b + "attn.to_k")), sd[b + "attn.norm_k.weight"])
        v = heads_of(_lin(sd, n, b + "attn.to_v"))
        hs = hs + gate[:, None] * _lin(sd, torch.cat([attention(q, k, v), mlp], 2), b + "proj_out")
    x = hs[:, L:]
    scale, shift = _lin(sd, F.silu(temb), "norm_out.linear").chunk(2, 1)
    x = _lin(sd, _ln(x) * (1 + scale[:, None]) + shift[:, None], "proj_out")
    T, h, w = clips[-1].shape[2], th, tw
    x = x[:, -T * h * w:].reshape(B, T, h, w, 2, 2, cfg["in_channels"] // 4)
    return rearrange(x, "b t h w p q c -> b c t (h p) (w q)")


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformer(tmp_path_factory) -> Path:
    return write_fake_miniflux_transformer(tmp_path_factory.mktemp("flux") / "diffusion_transformer_384p")


def _inputs(seed: int = 1, B: int = 2, L: int = 5):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, L, TINY["joint_attention_dim"], generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 3:] = 0  # padded text in one sample
    pooled = torch.randn(B, TINY["pooled_projection_dim"], generator=g)
    t = torch.tensor([700.0, 250.0])
    return g, enc, mask, pooled, t


def _ours(model, history, current, t, enc, mask, pooled):
    with torch.no_grad():
        return model(history, current, t, enc, mask.bool(), pooled, (current.shape[-2], current.shape[-1]))


CASES = {  # name: (history frame sizes (h, w) oldest first, current (T, h, w)) in latent pixels
    "frame 0": ([], (1, 8, 12)),
    "frame 0, stage 1": ([], (1, 4, 6)),
    "history, same grid": ([(8, 12), (8, 12)], (1, 8, 12)),
    "history, pyramid": ([(4, 6), (8, 12), (16, 24)], (1, 16, 24)),
    "two current frames": ([(4, 4)], (2, 8, 8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_velocity_equals_the_release_reference(transformer, case):
    from safetensors.torch import load_file

    model = load_miniflux_layout(transformer)
    sd = load_file(transformer / "diffusion_pytorch_model.safetensors")
    g, enc, mask, pooled, t = _inputs()
    hist_sizes, (T, h, w) = CASES[case]
    history = [torch.randn(2, 16, a, b, generator=g) for a, b in hist_sizes]
    current = torch.randn(2, 16, T, h, w, generator=g)
    with torch.no_grad():
        want = reference_velocity(sd, TINY, [x[:, :, None] for x in history] + [current], t, enc, mask, pooled)
    got = _ours(model, history, current, t, enc, mask, pooled)
    assert got.shape == current.shape
    assert want.abs().max() > 1e-2  # a real signal, not zeros
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_negative_controls_fail_the_equality(transformer, monkeypatch):
    """The check has teeth: a permuted weight, a wrong position rule or a shifted frame index each break it."""
    from safetensors.torch import load_file

    sd = load_file(transformer / "diffusion_pytorch_model.safetensors")
    g, enc, mask, pooled, t = _inputs()
    history = [torch.randn(2, 16, 4, 6, generator=g), torch.randn(2, 16, 8, 12, generator=g)]
    current = torch.randn(2, 16, 1, 8, 12, generator=g)
    clips = [x[:, :, None] for x in history] + [current]
    with torch.no_grad():
        want = reference_velocity(sd, TINY, clips, t, enc, mask, pooled)
    model = load_miniflux_layout(transformer)
    torch.testing.assert_close(_ours(model, history, current, t, enc, mask, pooled), want, atol=2e-5, rtol=1e-4)

    def far(got):
        return (got - want).abs().max().item() > 1e-3

    # 1. two rows of one q projection swapped
    bad = dict(sd)
    w = bad["transformer_blocks.1.attn.to_q.weight"].clone()
    bad["transformer_blocks.1.attn.to_q.weight"] = w[[1, 0, *range(2, w.shape[0])]]
    m = MiniFluxDiT(**miniflux.miniflux_kwargs(TINY))
    m.load_state_dict(release_to_suite(bad), strict=True)
    assert far(_ours(m.eval(), history, current, t, enc, mask, pooled))
    # 2. the reference without the history's interpolated coordinates: ours no longer matches it
    with torch.no_grad():
        no_interp = reference_velocity(sd, TINY, clips, t, enc, mask, pooled, interp_history=False)
    assert (no_interp - want).abs().max() > 1e-3
    # 3. our model with a wrong coordinate rule (align_corners=True style) for the coarser history frame
    monkeypatch.setattr(miniflux, "grid_coords", lambda n, ref, device: torch.linspace(0, ref - 1, n,
                                                                                        dtype=torch.float64))
    assert far(_ours(model, history, current, t, enc, mask, pooled))
    monkeypatch.undo()
    # 4. frame indices starting at 1 (the reference shifted): RoPE is relative within a sequence, but text stays
    # at 0, so the shift changes the result
    with torch.no_grad():
        shifted = reference_velocity(sd, TINY, clips, t, enc, mask, pooled, first_time_index=1)
    assert (shifted - want).abs().max() > 1e-3


def test_strict_load_uses_every_release_tensor(transformer, tmp_path):
    from safetensors.torch import load_file

    model = load_miniflux_layout(transformer)
    sd = load_file(transformer / "diffusion_pytorch_model.safetensors")
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in sd.values())
    cfg = model.config
    assert (cfg.in_channels, cfg.patch_size, cfg.hidden_size, cfg.num_heads, cfg.depth_double, cfg.depth_single,
            list(cfg.axes_dims_rope)) == (16, 2, 32, 2, 2, 2, [4, 6, 6])
    assert model.blocks[0].vid.q_norm.eps == 1e-6 and model.single_blocks[0].q_norm.eps == 1e-6
    torch.testing.assert_close(model.single_blocks[1].qkv.weight[:32],
                               sd["single_transformer_blocks.1.attn.to_q.weight"])
    torch.testing.assert_close(model.blocks[0].txt.q_norm.weight, sd["transformer_blocks.0.attn.norm_added_q.weight"])
    assert not model.kv_cache_exact
    # written by this suite and read back through the registry (config.json names MiniFluxDiT)
    model.save_pretrained(tmp_path / "ckpt")
    again = load_dit(tmp_path / "ckpt")
    assert isinstance(again, MiniFluxDiT)
    g, enc, mask, pooled, t = _inputs()
    cur = torch.randn(2, 16, 1, 8, 8, generator=g)
    torch.testing.assert_close(_ours(again, [], cur, t, enc, mask, pooled), _ours(model, [], cur, t, enc, mask,
                                                                                  pooled))


def test_a_missing_extra_or_misshapen_tensor_fails_naming_it(tmp_path):
    sd = fake_state()
    missing = dict(sd)
    del missing["single_transformer_blocks.1.proj_mlp.bias"]
    write_fake_miniflux_transformer(tmp_path / "missing", state=missing)
    with pytest.raises(KeyError, match=r"single_transformer_blocks\.1\.proj_mlp\.bias"):
        load_miniflux_layout(tmp_path / "missing")
    extra = {**sd, "transformer_blocks.0.attn.extra.weight": torch.zeros(3)}
    write_fake_miniflux_transformer(tmp_path / "extra", state=extra)
    with pytest.raises(KeyError, match=r"transformer_blocks\.0\.attn\.extra\.weight"):
        load_miniflux_layout(tmp_path / "extra")
    # a third double block in the file, two in config.json
    more = fake_state({**TINY, "num_layers": 3})
    write_fake_miniflux_transformer(tmp_path / "more", state=more)
    with pytest.raises(KeyError, match=r"transformer_blocks\.2\..*more blocks"):
        load_miniflux_layout(tmp_path / "more")
    wide = fake_state({**TINY, "attention_head_dim": 8, "axes_dims_rope": [2, 2, 4]})
    write_fake_miniflux_transformer(tmp_path / "wide", state=wide)
    with pytest.raises(ValueError, match=r"'x_embedder.weight': shape \(16, 64\) where .* has \(32, 64\)"):
        load_miniflux_layout(tmp_path / "wide")
    bad_cfg = {k: v for k, v in TINY.items() if k != "num_single_layers"}
    with pytest.raises(ValueError, match="num_single_layers"):
        miniflux.miniflux_kwargs(bad_cfg)


# --- the release folder: text encoders, detection, loading, sampling ----------------------------------------------


@pytest.fixture(scope="module")
def fake_flux_release(tmp_path_factory) -> Path:
    return write_fake_miniflux_release(tmp_path_factory.mktemp("release") / "pyramid-flow-miniflux",
                                       resolutions=("384p", "768p"))


def test_text_encoders_from_the_release_layout(fake_flux_release):
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    from pyramid_repro.models.text import ClipLT5Encoder

    enc = ClipLT5Encoder.from_release(fake_flux_release)
    prompts = ["a red cat moving left", "the dog"]
    tokens, mask, pooled = enc.encode(prompts)
    assert tokens.shape == (2, 128, 32) and mask.shape == (2, 128) and pooled.shape == (2, 16)
    assert mask.dtype == torch.bool and mask[1].sum() < mask[0].sum() and not mask[:, -1].any()
    # what their FluxTextEncoderWithMask computes, from the folders directly
    tok = CLIPTokenizer.from_pretrained(fake_flux_release / "tokenizer")
    clip = CLIPTextModel.from_pretrained(fake_flux_release / "text_encoder").eval()
    ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(pooled, clip(ids).pooler_output)
        t5tok = T5TokenizerFast.from_pretrained(fake_flux_release / "tokenizer_2")
        t5 = T5EncoderModel.from_pretrained(fake_flux_release / "text_encoder_2").eval()
        ti = t5tok(prompts, padding="max_length", max_length=128, truncation=True, return_tensors="pt")
        torch.testing.assert_close(tokens, t5(ti.input_ids, attention_mask=ti.attention_mask)[0])


def test_text_encoder_folder_missing_is_named(tmp_path):
    import shutil

    from release_fake_flux import write_fake_miniflux_text

    from pyramid_repro.models.text import ClipLT5Encoder

    root = write_fake_miniflux_text(tmp_path / "rel")
    shutil.rmtree(root / "text_encoder_2")
    with pytest.raises(ConfigError, match=r"text_encoder_2/ not found.*T5"):
        ClipLT5Encoder.from_release(root)


def test_release_detection_and_loading(fake_flux_release, tmp_path):
    rel = releases.find_release(fake_flux_release)
    assert rel.model == "miniflux" and rel.resolutions() == ["384p", "768p"]
    run = release.plan(fake_flux_release / "diffusion_transformer_768p", latent_frames=31)
    assert (run.model, run.resolution, run.size, run.name) == ("miniflux", "768p", (768, 1280),
                                                              "release-miniflux-768p")
    assert "miniFLUX release 768p" in run.label and run.to_dict()["model"] == "miniflux"
    assert release.plan(fake_flux_release, image=Path("x.png")).preset.name == "official-i2v"
    model, encoder, vae = release.load_release(release.plan(fake_flux_release), "cpu")
    assert isinstance(model, MiniFluxDiT) and type(encoder).__name__ == "ClipLT5Encoder"
    assert vae.norm == releases.MINIFLUX.normalization
    assert (vae.norm.image_shift, round(1 / vae.norm.image_scale, 4)) == (-0.04, 1.8726)  # theirs
    (fake_flux_release / "diffusion_transformer_image").mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match="1024p image model"):
        release.plan(fake_flux_release / "diffusion_transformer_image")
    # the SD3 layout is still the SD3 release
    sd3 = tmp_path / "sd3"
    for name in ("diffusion_transformer_384p", "causal_video_vae", *releases.SD3.text_folders):
        (sd3 / name).mkdir(parents=True)
    (sd3 / "diffusion_transformer_384p" / "config.json").write_text(json.dumps({"_class_name":
                                                                               "PyramidDiffusionMMDiT"}))
    assert releases.find_release(sd3).model == "sd3" and release.plan(sd3).name == "release-384p"


def _args(tmp_path: Path) -> list[str]:
    return ["--profile", "smoke", "--set", f"results={tmp_path / 'results'}", "--set", f"reports={tmp_path}/reports",
            "--set", "eval.max_prompts=2", "--set", "eval.samples_per_prompt=1", "--set", "compute.device=cpu",
            "--size", "128x64", "--latent-frames", "2"]


def _untrained_probe(results: Path) -> None:
    """The synthetic backend reads the profile's probe; an untrained one (seeded) is enough for the plumbing, and
    saves training it (the SD3 test borrows the smoke workflow's instead, ~3 min)."""
    from safetensors.torch import save_file

    from pyramid_repro.config import load_config
    from pyramid_repro.eval.probe import ProbeNet

    path = load_config("smoke", {"results": str(results)}).layout.probe_weights()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in ProbeNet().state_dict().items()}, str(path))


def test_compare_on_a_fake_miniflux_release(fake_flux_release, tmp_path, capsys):
    """Text-to-video at 384p, `compare` end to end with the synthetic backend (no pyramid row of this run: the
    table has the paper row and the release's)."""
    import pandas as pd

    from pyramid_repro.commands.compare import main

    resolution = "384p"
    _untrained_probe(tmp_path / "results")
    assert main(_args(tmp_path) + ["--checkpoint", str(fake_flux_release), "--resolution", resolution,
                                   "--backend", "synthetic"]) == 0
    assert "official-t2v: Euler steps 20,20,20/10,10,10" in capsys.readouterr().out
    name = f"release-miniflux-{resolution}"
    table = pd.read_csv(tmp_path / "reports" / "smoke" / f"compare_{name}.csv")
    row = table[table["model"].str.startswith(f"Pyramid Flow miniFLUX release {resolution}")].iloc[0]
    assert "negative prompt" in row["settings"] and row["total"] == row["total"]  # scored: not NaN
    work = tmp_path / "results" / "smoke" / "compare" / name
    index = json.loads((work / "samples" / "samples.json").read_text())
    assert index["release"]["model"] == "miniflux" and index["release"]["resolution"] == resolution
    assert len(index["samples"]) == 2


def test_compare_image_to_video_on_the_768p_fake_miniflux_transformer(fake_flux_release, tmp_path):
    """Image-to-video with the 768p transformer folder given directly: the i2v preset, the folder's resolution,
    and every video's first frame is the image (decoded through the miniFLUX normalisation)."""
    from PIL import Image

    from pyramid_repro.commands.compare import main
    from pyramid_repro.data.video_io import read_video

    img = tmp_path / "first.png"
    Image.new("RGB", (200, 100), (200, 30, 30)).save(img)
    _untrained_probe(tmp_path / "results")
    assert main(_args(tmp_path) + ["--set", "eval.max_prompts=1", "--checkpoint",
                                   str(fake_flux_release / "diffusion_transformer_768p"), "--image", str(img),
                                   "--backend", "synthetic"]) == 0
    work = tmp_path / "results" / "smoke" / "compare" / "release-miniflux-768p"
    index = json.loads((work / "samples" / "samples.json").read_text())
    assert index["release"]["preset"] == "official-i2v" and index["release"]["model"] == "miniflux"
    assert index["release"]["resolution"] == "768p" and len(index["samples"]) == 1
    frames = read_video(work / "samples" / index["samples"][0]["path"])[0]
    assert frames.shape[:3] == (9, 64, 128)
    assert (tmp_path / "reports" / "smoke" / "compare_release-miniflux-768p.csv").is_file()


def test_flex_kernel_equals_dense_attention(transformer):
    """The block mask (FlexAttention, the CUDA default) and the dense mask give the same velocity (CPU: the
    uncompiled kernel, forward only)."""
    from pyramid_repro.models.attention import flex_attention

    if flex_attention is None:
        pytest.skip("this PyTorch has no FlexAttention")
    model = load_miniflux_layout(transformer)
    g, enc, mask, pooled, t = _inputs()
    history = [torch.randn(2, 16, 4, 6, generator=g)]
    current = torch.randn(2, 16, 1, 8, 12, generator=g)
    model.attention_kernel = "sdpa"
    dense = _ours(model, history, current, t, enc, mask, pooled)
    model.attention_kernel = "flex"
    torch.testing.assert_close(_ours(model, history, current, t, enc, mask, pooled), dense, atol=2e-5, rtol=1e-4)
