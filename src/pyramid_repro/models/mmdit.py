"""The SD3-style MM-DiT with pyramid-aware tokens that this suite's model and the authors' share (docs/method.md
§3-§4): its blocks, its forward pass and the plan a forward derives from shapes alone.

One sequence per sample: text tokens, then the history frames (each at its own pyramid resolution, oldest first),
then the current frame(s) being denoised. Text and video have separate weights (qkv, output, MLP, norms) and meet
in one joint attention under a blockwise causal mask; adaLN-Zero modulation from the timestep embedding plus the
pooled text embedding; QK RMS-norm; 2D spatial positions and temporal RoPE. Batches are stage-homogeneous: every
sample of a batch has the same history resolutions and current size, so the sequence packs into dense tensors.

`MMDiT` is the shared model; what differs between this suite's design (`dit.PyramidDiT`) and the release
(`official.OfficialPyramidDiT`) are its hooks: `_conditioning` (what the context is conditioned on),
`_current_positions` / `_history_position` (the spatial position tables, models/positions.py),
`text_sees_first_frame` (the mask), `causal`, `kv_cache_exact` / `_check_cache` (the history KV cache), and
`text_pre_only_last` (the last block's text stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.normalization import RMSNorm
from einops import rearrange

from pyramid_repro.models.attention import MaskSpec, attend, resolve_kernel
from pyramid_repro.models.base import DiTModel
from pyramid_repro.models.positions import apply_rope, rope_angles


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: shift/scale per sample (B, H) or per token (B, N, H)."""
    if shift.dim() == 2:
        shift, scale = shift[:, None], scale[:, None]
    return x * (1 + scale) + shift


def _gate(g: torch.Tensor) -> torch.Tensor:
    return g[:, None] if g.dim() == 2 else g


@dataclass
class ContextCache:
    """Per-layer keys/values of the context (text + history tokens) for the history KV cache."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    frame_of_token: torch.Tensor  # frame index of each history token
    text_valid: torch.Tensor  # (B, L)
    n_frames: int  # number of history frames


@dataclass
class ForwardPlan:
    """What a forward pass derives from shapes and the text mask alone, never from the noisy input or its
    timestep: the position tables, frame indices, the attention mask (as the model's kernel takes it) and the RoPE
    tables. `MMDiT.plan` builds it; `forward(..., plan=plan)` then builds no table and creates no tensor
    from host data, so an Euler loop builds one plan per (frame, stage) and the forward it reuses it in is
    graph-safe (generation/capture.py captures it in a CUDA graph). Same values as the forward's own: same results."""

    current_shape: tuple[int, ...]  # (B, C, T, h, w) of the `current` it was made for
    cached: bool  # made for the KV-cache path (a `context`) or for the full forward
    cur_pos: torch.Tensor  # (h*w, hidden) positions of one current frame
    hist_pos: list[torch.Tensor]  # positions of each history frame (full forward only)
    n_hist: int  # history tokens in the sequence (full forward only; 0 with a context)
    mask: object  # what MaskSpec.build gives for the model's kernel
    cos: torch.Tensor  # RoPE of the video tokens whose queries and keys are computed in this pass
    sin: torch.Tensor


class StreamWeights(nn.Module):
    """Per-stream (text or video) parameters of one MM-DiT block."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qk_norm: bool, qk_norm_eps: float = 1e-6,
                 pre_only: bool = False):
        super().__init__()
        # pre_only: the stream only gives keys/values (the authors' last text block, "context pre-only"): its
        # adaLN has (scale, shift) alone and there is no output projection or MLP
        self.pre_only = pre_only
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        hd = hidden // heads
        self.q_norm = RMSNorm(hd, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, eps=qk_norm_eps) if qk_norm else nn.Identity()
        if not pre_only:
            self.proj = nn.Linear(hidden, hidden)
            self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(hidden, int(hidden * mlp_ratio)), nn.GELU(approximate="tanh"),
                                     nn.Linear(int(hidden * mlp_ratio), hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, (2 if pre_only else 6) * hidden))
        nn.init.zeros_(self.ada[-1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[-1].bias)


class MMDiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qk_norm: bool, qk_norm_eps: float = 1e-6,
                 text_pre_only: bool = False):
        super().__init__()
        self.heads = heads
        self.txt = StreamWeights(hidden, heads, mlp_ratio, qk_norm, qk_norm_eps, pre_only=text_pre_only)
        self.vid = StreamWeights(hidden, heads, mlp_ratio, qk_norm, qk_norm_eps)

    def _qkv(self, s: StreamWeights, x: torch.Tensor, shift, scale):
        return self._qkv_tokens(s, modulate(s.norm1(x), shift, scale))

    def _qkv_tokens(self, s: StreamWeights, x: torch.Tensor):
        """Queries, keys (QK RMS-norm) and values of already normalised and modulated tokens."""
        q, k, v = rearrange(s.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        return s.q_norm(q), s.k_norm(k), v

    @staticmethod
    def _per_part(n: int, x: torch.Tensor, hist, cur) -> torch.Tensor:
        """Apply hist(x[:, :n]) to the n history tokens and cur(x[:, n:]) to the current ones, joined again:
        the history is conditioned on the context (t = 0), the current frame on its timestep, each by its own
        per-sample (B, H) vectors, so no per-token (B, N, H) modulation tensor is built. Element for element the
        same arithmetic as one per-token tensor (tests/test_models.py checks equality)."""
        if n == 0:
            return cur(x)
        if n == x.shape[1]:
            return hist(x)
        return torch.cat([hist(x[:, :n]), cur(x[:, n:])], dim=1)

    def _modulated(self, n: int, x: torch.Tensor, mh, mc, i: int) -> torch.Tensor:
        """adaLN of x with shift/scale chunks i, i+1 of the history's (mh) and the current tokens' (mc) vectors."""
        return self._per_part(n, x, lambda a: modulate(a, mh[i], mh[i + 1]), lambda a: modulate(a, mc[i], mc[i + 1]))

    def _gated(self, n: int, x: torch.Tensor, y: torch.Tensor, mh, mc, i: int) -> torch.Tensor:
        """x + gate * y with gate chunk i of each part's vectors."""
        if n == 0:
            return x + _gate(mc[i]) * y
        if n == x.shape[1]:
            return x + _gate(mh[i]) * y
        return torch.cat([x[:, :n] + _gate(mh[i]) * y[:, :n], x[:, n:] + _gate(mc[i]) * y[:, n:]], dim=1)

    def forward(self, txt: torch.Tensor | None, vid: torch.Tensor, c_ctx: torch.Tensor, c_cur: torch.Tensor,
                n_hist: int, mask, rope: tuple[torch.Tensor, torch.Tensor],
                past: tuple[torch.Tensor, torch.Tensor] | None = None,
                record: list | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """txt may be None when the context comes from `past` (cached keys/values of text + history); `mask` is
        what MaskSpec.build gives for the model's attention kernel."""
        L = 0 if txt is None else txt.shape[1]
        mh, mc = self.vid.ada(c_ctx).chunk(6, dim=1), self.vid.ada(c_cur).chunk(6, dim=1)
        qv, kv, vv = self._qkv_tokens(self.vid, self._modulated(n_hist, self.vid.norm1(vid), mh, mc, 0))
        cos, sin = rope
        qv, kv = apply_rope(qv, cos, sin), apply_rope(kv, cos, sin)
        if txt is not None:
            if self.txt.pre_only:  # (scale, shift), diffusers' AdaLayerNormContinuous order
                scale, shift = self.txt.ada(c_ctx).chunk(2, dim=1)
                mt = (shift, scale)
            else:
                mt = self.txt.ada(c_ctx).chunk(6, dim=1)
            qt, kt, vt = self._qkv(self.txt, txt, mt[0], mt[1])
            q, k, v = torch.cat([qt, qv], 2), torch.cat([kt, kv], 2), torch.cat([vt, vv], 2)
        else:
            q, k, v = qv, kv, vv
        if record is not None:
            record.append((k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        o = rearrange(attend(q, k, v, mask), "b h n d -> b n (h d)")
        ot, ov = o[:, :L], o[:, L:]
        if txt is not None and self.txt.pre_only:
            txt = None  # nothing reads the text after the last block
        if txt is not None:
            txt = txt + _gate(mt[2]) * self.txt.proj(ot)
            txt = txt + _gate(mt[5]) * self.txt.mlp(modulate(self.txt.norm2(txt), mt[3], mt[4]))
        vid = self._gated(n_hist, vid, self.vid.proj(ov), mh, mc, 2)
        vid = self._gated(n_hist, vid, self.vid.mlp(self._modulated(n_hist, self.vid.norm2(vid), mh, mc, 3)), mh, mc, 5)
        return txt, vid


class MMDiT(DiTModel):
    """Velocity model v(history, current, t, text) of the module docstring's token layout. Not built itself: a
    subclass (`dit.PyramidDiT`, `official.OfficialPyramidDiT`) registers its config and implements the hooks."""

    #: text tokens also attend to the first frame's video tokens (the authors' model; positions.attention_mask)
    text_sees_first_frame: bool = False

    def __init__(self, *, in_channels: int, patch_size: int, hidden_size: int, depth: int, num_heads: int,
                 mlp_ratio: float, qk_norm: bool, text_dim: int, pooled_dim: int, qk_norm_eps: float,
                 text_pre_only_last: bool = False):
        """The layers, created in one fixed order (so one seed gives one initialisation). `text_pre_only_last`:
        the last block's text stream only gives keys and values."""
        super().__init__()
        p, H = patch_size, hidden_size
        if H % num_heads or (H // num_heads) % 2:
            raise ValueError(f"hidden_size {H} must split into {num_heads} heads of even size")
        self.patch = nn.Linear(in_channels * p * p, H)
        self.text_proj = nn.Linear(text_dim, H)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_emb = TimestepEmbedding(256, H)
        self.pooled_emb = nn.Sequential(nn.Linear(pooled_dim, H), nn.SiLU(), nn.Linear(H, H))
        self.blocks = nn.ModuleList([MMDiTBlock(H, num_heads, mlp_ratio, qk_norm, qk_norm_eps,
                                                text_pre_only=text_pre_only_last and i == depth - 1)
                                     for i in range(depth)])
        self.final_norm = nn.LayerNorm(H, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(H, 2 * H))
        self.final = nn.Linear(H, in_channels * p * p)
        for m in (self.final_ada[-1], self.final):  # zero output: the untrained model predicts 0 velocity
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # --- hooks: what a subclass decides ------------------------------------------------------------------------

    @property
    def causal(self) -> bool:
        """Whether video tokens attend only to their own and earlier frames (blockwise causal mask)."""
        raise NotImplementedError

    def _conditioning(self, timestep: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(context, current) conditioning vectors: what the text + history tokens' and the current frame's
        adaLN read."""
        raise NotImplementedError

    def _current_positions(self, gh: int, gw: int, FH: int, FW: int, dev, dtype) -> torch.Tensor:
        """(gh*gw, hidden) spatial positions of a current frame on a gh x gw patch grid (full grid FH x FW)."""
        raise NotImplementedError

    def _history_position(self, gh: int, gw: int, FH: int, FW: int, cur_grid: tuple[int, int] | None, dev,
                          dtype) -> torch.Tensor:
        """(gh*gw, hidden) spatial positions of a history frame on a gh x gw patch grid (full grid FH x FW; the
        current frame's grid `cur_grid`, None when the history is encoded alone for the KV cache)."""
        raise NotImplementedError

    def _check_cache(self) -> None:
        """Raise unless the history KV cache is exact for this model (`kv_cache_exact`), saying why."""
        if not self.kv_cache_exact:
            raise ValueError(f"the history KV cache is not exact for {type(self).__name__}")

    # --- shared ------------------------------------------------------------------------------------------------

    def _embed(self, timestep: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Timestep embedding plus the pooled text embedding `p`: an adaLN conditioning vector."""
        return self.time_emb(self.time_proj(timestep).to(p.dtype)) + p

    def _mask(self, frame_of_token: torch.Tensor, text_valid: torch.Tensor, n_queries: int):
        """The attention mask of a pass whose queries are the last `n_queries` tokens, as the model's kernel takes
        it; causal or not and what text sees follow the model (the KV-cache paths are causal-only)."""
        spec = MaskSpec(frame_of_token, text_valid.bool(), self.causal, n_queries, self.text_sees_first_frame)
        return spec.build(resolve_kernel(self.attention_kernel, frame_of_token.device))

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return self.patch(rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p))

    def _history_positions(self, history: list[torch.Tensor], FH: int, FW: int,
                           cur_grid: tuple[int, int] | None = None) -> tuple[list, list]:
        """Spatial positions (`_history_position`) and frame indices of the history frames' tokens, oldest
        first."""
        p = self.config.patch_size
        positions, frames = [], []
        for i, hf in enumerate(history):
            gh, gw = hf.shape[-2] // p, hf.shape[-1] // p
            positions.append(self._history_position(gh, gw, FH, FW, cur_grid, hf.device, hf.dtype))
            frames.append(torch.full((gh * gw,), i, device=hf.device))
        return positions, frames

    def _history_tokens(self, history: list[torch.Tensor], FH: int, FW: int,
                        cur_grid: tuple[int, int] | None = None) -> tuple[list, list]:
        """Tokens (patch embedding + spatial positions) and frame indices of the history frames, oldest first."""
        positions, frames = self._history_positions(history, FH, FW, cur_grid)
        return [self._tokens(hf) + pos for hf, pos in zip(history, positions)], frames

    def plan(self, history: list[torch.Tensor], current_shape: tuple[int, ...], text_mask: torch.Tensor | None,
             full_size: tuple[int, int], context: ContextCache | None = None,
             device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> ForwardPlan:
        """The ForwardPlan of a forward pass whose `current` has `current_shape` (B, C, T, h, w), `dtype` and
        `device`, with these history frames (only their shapes, dtypes and devices are read) and text mask, or
        with a `context` from `encode_context` (then history and text_mask are not used)."""
        p, hd = self.config.patch_size, self.config.hidden_size // self.config.num_heads
        B, C, T, h, w = current_shape
        FH, FW = full_size[0] // p, full_size[1] // p
        if device is None:
            device = context.frame_of_token.device if context is not None else text_mask.device
        dev = torch.device(device)
        n = context.n_frames if context is not None else len(history)
        cur_pos = self._current_positions(h // p, w // p, FH, FW, dev, dtype)
        cur_frames = torch.arange(n, n + T, device=dev).repeat_interleave(cur_pos.shape[0])
        n_cur = T * cur_pos.shape[0]
        if context is None:
            hist_pos, frames = self._history_positions(history, FH, FW, (h // p, w // p))
            frame_of_token = torch.cat(frames + [cur_frames])
            n_hist = frame_of_token.shape[0] - n_cur
            mask = self._mask(frame_of_token, text_mask, text_mask.shape[1] + frame_of_token.shape[0])
            cos, sin = rope_angles(frame_of_token, hd)
        else:
            self._check_cache()
            hist_pos, n_hist = [], 0
            all_frames = torch.cat([context.frame_of_token, cur_frames])
            mask = self._mask(all_frames, context.text_valid, n_cur)
            cos, sin = rope_angles(cur_frames, hd)
        return ForwardPlan(tuple(current_shape), context is not None, cur_pos, hist_pos, n_hist, mask, cos, sin)

    def forward(self, history: list[torch.Tensor], current: torch.Tensor, timestep: torch.Tensor,
                tokens: torch.Tensor | None, text_mask: torch.Tensor | None, pooled: torch.Tensor,
                full_size: tuple[int, int], context: ContextCache | None = None,
                plan: ForwardPlan | None = None) -> torch.Tensor:
        """Velocity for `current`.

        history: list of (B, C, h_i, w_i) latent frames, oldest first (frame indices 0..n-1), may be empty.
        current: (B, C, T, h, w) noisy frame(s) at the stage resolution, frame indices n..n+T-1.
        timestep: (B,) global timestep in [0, 1000]; tokens (B, L, D_txt); text_mask (B, L) bool; pooled (B, P).
        full_size: (H, W) of the full-resolution latent (positions are coordinates of its patch grid).
        context: keys/values of text + history from `encode_context` (then history/tokens are not used).
        plan: this call's `plan(...)`, made once and reused by calls of the same shapes (None: made here).
        """
        B, C, T, h, w = current.shape
        dev = current.device
        if plan is None:
            plan = self.plan(history, tuple(current.shape), text_mask, full_size, context, dev, current.dtype)
        elif plan.current_shape != tuple(current.shape) or plan.cached != (context is not None):
            raise ValueError(f"a ForwardPlan made for current {plan.current_shape} "
                             f"({'with' if plan.cached else 'without'} a context) used for current "
                             f"{tuple(current.shape)} ({'with' if context is not None else 'without'} one)")
        cur = torch.cat([self._tokens(current[:, :, t]) + plan.cur_pos for t in range(T)], dim=1)
        c_ctx, c_cur = self._conditioning(timestep, pooled)
        cos, sin = plan.cos, plan.sin
        if context is None:
            parts = [self._tokens(hf) + pos for hf, pos in zip(history, plan.hist_pos)]
            vid = torch.cat(parts + [cur], dim=1)
            txt = self.text_proj(tokens)
            n_hist = plan.n_hist
            rope = (cos.to(dev, txt.dtype), sin.to(dev, txt.dtype))
            for i, blk in enumerate(self.blocks):  # the first blocks under activation checkpointing (DiTModel)
                txt, vid = self.run_block(blk, i, len(self.blocks), txt, vid, c_ctx, c_cur, n_hist, plan.mask, rope)
            vid = vid[:, n_hist:]
        else:
            self._check_cache()
            vid = cur
            for blk, past in zip(self.blocks, context.kv):
                _, vid = blk(None, vid, c_ctx, c_cur, 0, plan.mask, (cos.to(dev, vid.dtype), sin.to(dev, vid.dtype)),
                             past)
        shift, scale = self.final_ada(c_cur).chunk(2, dim=1)
        out = self.final(modulate(self.final_norm(vid), shift, scale))
        p = self.config.patch_size
        return rearrange(out, "b (t h w) (c p q) -> b c t (h p) (w q)", t=T, h=h // p, w=w // p, p=p, q=p)

    @torch.no_grad()
    def encode_context(self, history: list[torch.Tensor], tokens: torch.Tensor, text_mask: torch.Tensor,
                       pooled: torch.Tensor, full_size: tuple[int, int]) -> ContextCache:
        """Keys/values of text + history at every layer, computed once and reused for every denoising step of
        the next frame (exact under the causal mask; see `_conditioning`)."""
        self._check_cache()
        p = self.config.patch_size
        FH, FW = full_size[0] // p, full_size[1] // p
        dev = tokens.device
        parts, frames = self._history_tokens(history, FH, FW)
        txt = self.text_proj(tokens)
        vid = torch.cat(parts, dim=1) if parts else txt[:, :0]
        frame_of_token = torch.cat(frames) if frames else torch.zeros(0, dtype=torch.long, device=dev)
        c_ctx, _ = self._conditioning(torch.zeros(tokens.shape[0], device=dev), pooled)
        mask = self._mask(frame_of_token, text_mask, txt.shape[1] + vid.shape[1])
        cos, sin = rope_angles(frame_of_token, self.config.hidden_size // self.config.num_heads)
        kv: list = []
        for blk in self.blocks:
            txt, vid = blk(txt, vid, c_ctx, c_ctx, vid.shape[1], mask, (cos.to(dev, txt.dtype), sin.to(dev, txt.dtype)),
                           record=kv)
        return ContextCache(kv, frame_of_token, text_mask.bool(), len(history))
