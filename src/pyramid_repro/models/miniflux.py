"""The authors' miniFLUX transformer (their `PyramidFluxTransformer`, pipeline `model_name="pyramid_flux"`;
docs/release.md "miniFLUX"): `MiniFluxDiT`, and strict converters from the release folder's weight names and
back (`release_to_suite`, `suite_to_release`; the config.json both ways: `miniflux_kwargs`,
`miniflux_config_from_suite`).

What the release computes (read from their pyramid_dit/flux_modules/, 2024-12 snapshot), and where this class
shares the suite's code:

* patch embedding: a linear layer on 2x2 patches of the 16-channel latent flattened in (row, column, channel)
  order (their config says `in_channels: 64` = 16 x 2 x 2 and `patch_size: 1`; the 2x2 patch is hard-coded);
* conditioning c = timestep MLP (256-d sin-cos, cos first) + pooled-text MLP (CLIP-L's pooled output, SiLU
  between the two layers); every token, history and text included, is modulated by the current timestep;
* `num_layers` double-stream blocks (separate text / video weights, adaLN-Zero, QK RMS-norm, joint attention,
  GELU-tanh MLP): the same computation as this suite's MM-DiT block, so `mmdit.MMDiTBlock` is used as it is;
* then `num_single_layers` single-stream blocks on [text, video]: adaLN (shift, scale, gate), one qkv projection,
  QK RMS-norm, attention and a parallel GELU-tanh MLP whose outputs are concatenated and projected back
  (`SingleStreamBlock`);
* positions: 3-D RoPE only (no additive table) on (frame index, row, column) with `axes_dims_rope` (16, 24, 24)
  channels of each 64-channel head, theta 10000, adjacent channel pairs rotated (`positions.apply_rope`). Text
  tokens have position (0, 0, 0), i.e. no rotation. Frame indices run over the history, oldest = 0, then the
  current frame(s). A history frame coarser than the current frame gets the current grid's row/column
  coordinates resampled to its grid by 1-D linear interpolation (align_corners=False): coordinate
  clamp((i + 0.5) * H_cur / h - 0.5, 0, H_cur - 1);
* attention mask (their SDPA path, `use_temporal_causal=True`): valid text keys only; a token sees keys whose
  frame index is <= its own, text counting as frame 0, so text sees text and the first frame's video tokens:
  `MaskSpec(causal=True, text_sees_first_frame=True)` (padded text queries differ, which no video token reads);
* output: adaLN-continuous (scale, shift) final norm, a linear layer back to 2x2x16 values per token.

QK-norm epsilon is 1e-6 (their `Attention(..., eps=1e-6)` in both block kinds), the LayerNorms' too.
The history KV cache is refused: the context is modulated by the current timestep (as in the SD3 release).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.normalization import RMSNorm
from einops import rearrange

from pyramid_repro.models.attention import MaskSpec, attend, resolve_kernel
from pyramid_repro.models.base import DiTModel, StateTaker, read_release_folder
from pyramid_repro.models.mmdit import MMDiTBlock, modulate
from pyramid_repro.models.positions import apply_rope

MINIFLUX_QK_NORM_EPS = 1e-6  # their flux blocks' RMSNorm epsilon
MINIFLUX_CLASS_NAME = "PyramidFluxTransformer"  # `_class_name` of the release's transformer config.json
PATCH = 2  # hard-coded in their class (`self.patch_size = 2`), whatever the config's patch_size says


class SingleStreamBlock(nn.Module):
    """FLUX single-stream block on the joint [text, video] sequence: adaLN (shift, scale, gate) of one
    LayerNorm, attention (qkv, QK RMS-norm, RoPE) beside a GELU-tanh MLP, both concatenated and projected."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0, qk_norm_eps: float = MINIFLUX_QK_NORM_EPS):
        super().__init__()
        self.heads = heads
        mlp = int(hidden * mlp_ratio)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.q_norm = RMSNorm(hidden // heads, eps=qk_norm_eps)
        self.k_norm = RMSNorm(hidden // heads, eps=qk_norm_eps)
        self.mlp_in = nn.Linear(hidden, mlp)
        self.act = nn.GELU(approximate="tanh")
        self.out = nn.Linear(hidden + mlp, hidden)

    def forward(self, x: torch.Tensor, c: torch.Tensor, n_text: int, mask,
                rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, L + N, H) text then video tokens; rope: cos, sin (N, head_dim) of the video tokens (text: none)."""
        shift, scale, gate = self.ada(c).chunk(3, dim=1)
        h = modulate(self.norm(x), shift, scale)
        q, k, v = rearrange(self.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope
        q = torch.cat([q[:, :, :n_text], apply_rope(q[:, :, n_text:], cos, sin)], dim=2)
        k = torch.cat([k[:, :, :n_text], apply_rope(k[:, :, n_text:], cos, sin)], dim=2)
        o = rearrange(attend(q, k, v, mask), "b h n d -> b n (h d)")
        return x + gate[:, None] * self.out(torch.cat([o, self.act(self.mlp_in(h))], dim=2))


def rope_3d(frames: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, axes: tuple[int, ...],
            theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, sum(axes)) of a 3-D RoPE: for axis a with d_a channels, angles pos_a / theta^(2i/d_a),
    i < d_a / 2, concatenated over the axes (frame, row, column) and repeated for each channel pair (computed in
    float64 as the release does)."""
    parts = []
    for pos, d in zip((frames, rows, cols), axes):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=pos.device) / d)
        parts.append(pos.double()[:, None] * freqs[None])
    ang = torch.repeat_interleave(torch.cat(parts, dim=1), 2, dim=1)
    return ang.cos().float(), ang.sin().float()


def grid_coords(n: int, ref: int, device) -> torch.Tensor:
    """(n,) coordinates of an n-cell axis on the reference (current frame's) ref-cell axis: 0..ref-1 when n == ref,
    else the linearly resampled coordinates (align_corners=False, clamped to [0, ref - 1])."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    if n == ref:
        return i
    return ((i + 0.5) * ref / n - 0.5).clamp(0, ref - 1)


class MiniFluxDiT(DiTModel):
    """The authors' miniFLUX transformer (module docstring). `in_channels` is the latent's channel count (16),
    `patch_size` the 2x2 patch; the release's config.json is read by `miniflux_kwargs`."""

    text_sees_first_frame = True

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size: int = PATCH, hidden_size: int = 1920, num_heads: int = 30,
                 depth_double: int = 8, depth_single: int = 16, text_dim: int = 4096, pooled_dim: int = 768,
                 axes_dims_rope: tuple[int, ...] = (16, 24, 24), rope_theta: float = 10000.0,
                 mlp_ratio: float = 4.0, qk_norm_eps: float = MINIFLUX_QK_NORM_EPS):
        super().__init__()
        H, p = hidden_size, patch_size
        if H % num_heads or sum(axes_dims_rope) != H // num_heads or any(d % 2 for d in axes_dims_rope):
            raise ValueError(f"axes_dims_rope {list(axes_dims_rope)} must be even and sum to the head size "
                             f"{H // num_heads} (hidden {H} / {num_heads} heads)")
        self.patch = nn.Linear(in_channels * p * p, H)
        self.text_proj = nn.Linear(text_dim, H)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_emb = TimestepEmbedding(256, H)
        self.pooled_emb = nn.Sequential(nn.Linear(pooled_dim, H), nn.SiLU(), nn.Linear(H, H))
        self.blocks = nn.ModuleList([MMDiTBlock(H, num_heads, mlp_ratio, True, qk_norm_eps)
                                     for _ in range(depth_double)])
        self.single_blocks = nn.ModuleList([SingleStreamBlock(H, num_heads, mlp_ratio, qk_norm_eps)
                                            for _ in range(depth_single)])
        self.final_norm = nn.LayerNorm(H, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(H, 2 * H))  # (scale, shift), the release's order
        self.final = nn.Linear(H, in_channels * p * p)

    @property
    def causal(self) -> bool:
        return True

    def block_lists(self) -> list[nn.ModuleList]:
        """The double-stream blocks, then the single-stream ones."""
        return [self.blocks, self.single_blocks]

    def _conditioning(self, timestep: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        p = self.pooled_emb(pooled)
        return self.time_emb(self.time_proj(timestep).to(p.dtype)) + p

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return self.patch(rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p))

    def positions(self, history_grids: list[tuple[int, int]], cur_grid: tuple[int, int], T: int,
                  device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(frame index, row, column) of every video token: history frames (grids oldest first), then T current
        frames, rows/columns in the current grid's coordinates (module docstring)."""
        frames, rows, cols = [], [], []
        gh0, gw0 = cur_grid
        grids = list(history_grids) + [cur_grid] * T
        for i, (gh, gw) in enumerate(grids):
            r, c = grid_coords(gh, gh0, device), grid_coords(gw, gw0, device)
            rows.append(r[:, None].expand(gh, gw).reshape(-1))
            cols.append(c[None, :].expand(gh, gw).reshape(-1))
            frames.append(torch.full((gh * gw,), float(i), dtype=torch.float64, device=device))
        return torch.cat(frames), torch.cat(rows), torch.cat(cols)

    def forward(self, history: list[torch.Tensor], current: torch.Tensor, timestep: torch.Tensor,
                tokens: torch.Tensor, text_mask: torch.Tensor, pooled: torch.Tensor, full_size: tuple[int, int],
                context=None, plan=None) -> torch.Tensor:
        """Velocity of `current` (B, C, T, h, w) given the history frames (B, C, h_i, w_i), oldest first
        (models/base.py's contract; `full_size` is not used: positions are relative to the current grid)."""
        if context is not None:
            raise ValueError("the history KV cache is not exact for the miniFLUX model (its context is modulated "
                             "by the current timestep); sample without the cache")
        B, C, T, h, w = current.shape
        p, dev = self.config.patch_size, current.device
        cur_grid = (h // p, w // p)
        frames, rows, cols = self.positions([(hf.shape[-2] // p, hf.shape[-1] // p) for hf in history],
                                            cur_grid, T, dev)
        cos, sin = (t.to(dev, current.dtype) for t in rope_3d(frames, rows, cols, tuple(self.config.axes_dims_rope),
                                                               self.config.rope_theta))
        frame_of_token = frames.long()
        L = tokens.shape[1]
        spec = MaskSpec(frame_of_token, text_mask.bool(), True, L + frame_of_token.shape[0], True)
        mask = spec.build(resolve_kernel(self.attention_kernel, dev))
        vid = torch.cat([self._tokens(hf) for hf in history] + [self._tokens(current[:, :, t]) for t in range(T)],
                        dim=1)
        txt = self.text_proj(tokens)
        c = self._conditioning(timestep, pooled)
        # the first blocks of each list under activation checkpointing (DiTModel.run_block)
        for i, blk in enumerate(self.blocks):
            txt, vid = self.run_block(blk, i, len(self.blocks), txt, vid, c, c, 0, mask, (cos, sin))
        x = torch.cat([txt, vid], dim=1)
        for i, blk in enumerate(self.single_blocks):
            x = self.run_block(blk, i, len(self.single_blocks), x, c, L, mask, (cos, sin))
        n_cur = T * cur_grid[0] * cur_grid[1]
        vid = x[:, x.shape[1] - n_cur:]
        scale, shift = self.final_ada(c).chunk(2, dim=1)
        out = self.final(modulate(self.final_norm(vid), shift, scale))
        return rearrange(out, "b (t h w) (p q c) -> b c t (h p) (w q)", t=T, h=cur_grid[0], w=cur_grid[1], p=p, q=p)


# --- the release's layout ---------------------------------------------------------------------------------------

_TOP = {
    "x_embedder": "patch", "context_embedder": "text_proj",
    "time_text_embed.timestep_embedder.linear_1": "time_emb.linear_1",
    "time_text_embed.timestep_embedder.linear_2": "time_emb.linear_2",
    "time_text_embed.text_embedder.linear_1": "pooled_emb.0",
    "time_text_embed.text_embedder.linear_2": "pooled_emb.2",
    "norm_out.linear": "final_ada.1", "proj_out": "final",
}
_DOUBLE = {  # linear layers (weight + bias)
    "norm1.linear": "vid.ada.1", "norm1_context.linear": "txt.ada.1",
    "attn.to_out.0": "vid.proj", "attn.to_add_out": "txt.proj",
    "ff.net.0.proj": "vid.mlp.0", "ff.net.2": "vid.mlp.2",
    "ff_context.net.0.proj": "txt.mlp.0", "ff_context.net.2": "txt.mlp.2",
}
_DOUBLE_NORMS = {"attn.norm_q": "vid.q_norm", "attn.norm_k": "vid.k_norm",
                 "attn.norm_added_q": "txt.q_norm", "attn.norm_added_k": "txt.k_norm"}
_DOUBLE_QKV = {"vid": ("attn.to_q", "attn.to_k", "attn.to_v"),
               "txt": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE = {"norm.linear": "ada.1", "proj_mlp": "mlp_in", "proj_out": "out"}
_SINGLE_NORMS = {"attn.norm_q": "q_norm", "attn.norm_k": "k_norm"}


def release_to_suite(state: dict[str, torch.Tensor], expected: dict[str, torch.Size] | None = None
                     ) -> dict[str, torch.Tensor]:
    """A state dict with the release's names (their PyramidFluxTransformer) -> MiniFluxDiT's, every tensor used
    exactly once. q/k/v projections are concatenated in (q, k, v) order; nothing else changes (the class keeps
    the release's patch flattening and final (scale, shift) order). With `expected` (MiniFluxDiT's state-dict
    shapes) every converted tensor's shape is checked. Raises KeyError naming a missing or left-over release key,
    ValueError naming a tensor of the wrong shape."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    take = StateTaker(state, "the miniFLUX transformer's state dict has no {key} (not the authors' "
                      "PyramidFluxTransformer layout, or a truncated file)",
                      "of the miniFLUX transformer have no place in MiniFluxDiT")

    def put(new: str, value: torch.Tensor, old: str) -> None:
        out[new], origin[new] = value, old

    for old, new in _TOP.items():
        for t in ("weight", "bias"):
            put(f"{new}.{t}", take(f"{old}.{t}"), f"{old}.{t}")
    n_double = _count(state, "transformer_blocks.")
    n_single = _count(state, "single_transformer_blocks.")
    for i in range(n_double):
        pre = f"transformer_blocks.{i}."
        for stream, names in _DOUBLE_QKV.items():
            for t in ("weight", "bias"):
                put(f"blocks.{i}.{stream}.qkv.{t}", torch.cat([take(f"{pre}{n}.{t}") for n in names]),
                    f"{pre}{names[0]}.{t}")
        for old, new in _DOUBLE.items():
            for t in ("weight", "bias"):
                put(f"blocks.{i}.{new}.{t}", take(f"{pre}{old}.{t}"), f"{pre}{old}.{t}")
        for old, new in _DOUBLE_NORMS.items():
            put(f"blocks.{i}.{new}.weight", take(f"{pre}{old}.weight"), f"{pre}{old}.weight")
    for i in range(n_single):
        pre = f"single_transformer_blocks.{i}."
        for t in ("weight", "bias"):
            put(f"single_blocks.{i}.qkv.{t}", torch.cat([take(f"{pre}attn.to_{n}.{t}") for n in "qkv"]),
                f"{pre}attn.to_q.{t}")
        for old, new in _SINGLE.items():
            for t in ("weight", "bias"):
                put(f"single_blocks.{i}.{new}.{t}", take(f"{pre}{old}.{t}"), f"{pre}{old}.{t}")
        for old, new in _SINGLE_NORMS.items():
            put(f"single_blocks.{i}.{new}.weight", take(f"{pre}{old}.weight"), f"{pre}{old}.weight")
    take.done()
    if expected is not None:
        missing = sorted(set(expected) - set(out))
        if missing:
            raise KeyError(f"the release's transformer lacks weights MiniFluxDiT needs: {missing[:8]} (fewer "
                           "blocks in the file than num_layers / num_single_layers in its config.json?)")
        for k, v in out.items():
            if k not in expected:
                raise KeyError(f"{origin[k]!r} -> {k!r}: no such weight in MiniFluxDiT (more blocks in the file "
                               "than its config.json says?)")
            if tuple(v.shape) != tuple(expected[k]):
                raise ValueError(f"{origin[k]!r}: shape {tuple(v.shape)} where MiniFluxDiT's {k!r} has "
                                 f"{tuple(expected[k])} (config.json and weights disagree)")
    return out


def _count(state: dict, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    if ids and ids != set(range(len(ids))):
        raise KeyError(f"{prefix}N: block indices {sorted(ids)} are not 0..{len(ids) - 1}")
    return len(ids)


def suite_to_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `release_to_suite`: MiniFluxDiT's state dict -> the release's names, every tensor used once,
    dtypes kept; fused q/k/v are split back into thirds. Raises KeyError naming a missing key or one it cannot
    place."""
    out: dict[str, torch.Tensor] = {}
    take = StateTaker(state, "MiniFluxDiT's state dict has no {key} (not this class's weights, or a truncated "
                      "checkpoint)", "of MiniFluxDiT have no place in the release's layout")

    def split(key: str, names: list[str]) -> None:
        for name, part in zip(names, take(key).chunk(3)):
            out[name] = part.clone()  # not views of one storage (safetensors writes no shared tensors)

    for old, new in _TOP.items():
        for t in ("weight", "bias"):
            out[f"{old}.{t}"] = take(f"{new}.{t}")
    for i in range(_count(state, "blocks.")):
        pre = f"transformer_blocks.{i}."
        for stream, names in _DOUBLE_QKV.items():
            for t in ("weight", "bias"):
                split(f"blocks.{i}.{stream}.qkv.{t}", [f"{pre}{n}.{t}" for n in names])
        for old, new in _DOUBLE.items():
            for t in ("weight", "bias"):
                out[f"{pre}{old}.{t}"] = take(f"blocks.{i}.{new}.{t}")
        for old, new in _DOUBLE_NORMS.items():
            out[f"{pre}{old}.weight"] = take(f"blocks.{i}.{new}.weight")
    for i in range(_count(state, "single_blocks.")):
        pre = f"single_transformer_blocks.{i}."
        for t in ("weight", "bias"):
            split(f"single_blocks.{i}.qkv.{t}", [f"{pre}attn.to_{n}.{t}" for n in "qkv"])
        for old, new in _SINGLE.items():
            for t in ("weight", "bias"):
                out[f"{pre}{old}.{t}"] = take(f"single_blocks.{i}.{new}.{t}")
        for old, new in _SINGLE_NORMS.items():
            out[f"{pre}{old}.weight"] = take(f"single_blocks.{i}.{new}.weight")
    take.done()
    return out


# the release's transformer config.json beyond the architecture (their PyramidFluxTransformer arguments as the
# release sets them): written when a model is exported without its release's own config.json
MINIFLUX_RELEASE_EXTRAS = {
    "_class_name": MINIFLUX_CLASS_NAME, "_diffusers_version": "0.30.3", "patch_size": 1, "use_flash_attn": False,
    "use_temporal_causal": True, "interp_condition_pos": True, "use_gradient_checkpointing": False,
    "gradient_checkpointing_ratio": 0.6,
}


def miniflux_config_from_suite(kwargs: dict) -> dict:
    """The release's transformer config.json from MiniFluxDiT's arguments (the inverse of `miniflux_kwargs`), with
    the release's other keys (`MINIFLUX_RELEASE_EXTRAS`)."""
    if kwargs["patch_size"] != PATCH:
        raise ValueError(f"patch_size {kwargs['patch_size']}: the release's class hard-codes {PATCH}x{PATCH} patches")
    hidden, heads = kwargs["hidden_size"], kwargs["num_heads"]
    arch = {"in_channels": kwargs["in_channels"] * PATCH * PATCH, "num_layers": kwargs["depth_double"],
            "num_single_layers": kwargs["depth_single"], "attention_head_dim": hidden // heads,
            "num_attention_heads": heads, "joint_attention_dim": kwargs["text_dim"],
            "pooled_projection_dim": kwargs["pooled_dim"], "axes_dims_rope": list(kwargs["axes_dims_rope"])}
    return {**MINIFLUX_RELEASE_EXTRAS, **arch}


def miniflux_kwargs(config: dict) -> dict:
    """MiniFluxDiT arguments from the release's transformer config.json (keys of their PyramidFluxTransformer:
    in_channels 64 = 16 latent channels x 2 x 2, num_layers, num_single_layers, attention_head_dim,
    num_attention_heads, joint_attention_dim, pooled_projection_dim, axes_dims_rope). ValueError naming what is
    missing or unsupported."""
    needed = ("in_channels", "num_layers", "num_single_layers", "attention_head_dim", "num_attention_heads",
              "joint_attention_dim", "pooled_projection_dim")
    missing = [k for k in needed if config.get(k) is None]
    if missing:
        raise ValueError(f"transformer config.json lacks {missing}: not a miniFLUX (PyramidFluxTransformer) config")
    if config["in_channels"] % (PATCH * PATCH):
        raise ValueError(f"config.json in_channels {config['in_channels']}: expected latent channels x 4 (2x2 "
                         "patches), e.g. 64")
    if config.get("use_temporal_causal", True) is not True:
        raise ValueError("config.json use_temporal_causal is false: the authors sample miniFLUX causally "
                         "(their pipeline passes use_temporal_causal=True); this class is causal only")
    # their pipeline passes axes_dims_rope=[16, 24, 24] whatever the config says
    axes = tuple(config.get("axes_dims_rope") or (16, 24, 24))
    return {"in_channels": config["in_channels"] // (PATCH * PATCH), "patch_size": PATCH,
            "hidden_size": config["num_attention_heads"] * config["attention_head_dim"],
            "num_heads": config["num_attention_heads"], "depth_double": config["num_layers"],
            "depth_single": config["num_single_layers"], "text_dim": config["joint_attention_dim"],
            "pooled_dim": config["pooled_projection_dim"], "axes_dims_rope": axes}


def is_miniflux_config(config: dict) -> bool:
    """Whether a transformer config.json is the release's miniFLUX one."""
    return config.get("_class_name") == MINIFLUX_CLASS_NAME or "num_single_layers" in config


def load_miniflux_layout(folder: str | Path) -> MiniFluxDiT:
    """MiniFluxDiT with the weights of a release transformer folder (config.json + *.safetensors), strictly:
    every tensor placed once, shapes checked; float32, eval mode, CPU."""
    config, state = read_release_folder(folder, "a miniFLUX transformer folder of the release")
    kwargs = miniflux_kwargs(config)
    with torch.device("meta"):  # not initialised randomly first, not held twice
        model = MiniFluxDiT(**kwargs)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    converted = release_to_suite(state, expected)
    model.load_state_dict({k: v.float().contiguous() for k, v in converted.items()}, strict=True, assign=True)
    return model.eval()
