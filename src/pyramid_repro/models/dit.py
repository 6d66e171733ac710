"""MM-DiT in the style of SD3 with pyramid-aware tokens (PAPER.md sections 3-4).

One sequence per sample: text tokens, then the history frames (each at its own pyramid resolution, oldest first),
then the current frame(s) being denoised. Text and video have separate weights (qkv, output, MLP, norms) and meet
in one joint attention with a blockwise causal mask; adaLN-Zero modulation from the timestep embedding plus the
pooled text embedding; QK RMS-norm; 2D sin-cos spatial positions (extrapolated for the current stage,
interpolated for history) and temporal RoPE. Batches are stage-homogeneous: every sample of a batch has the same
history resolutions and current size, so the sequence packs into dense tensors.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import RMSNorm
from einops import rearrange

from pyramid_repro.models.positions import apply_rope, attention_mask, rope_angles, spatial_embedding


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class StreamWeights(nn.Module):
    """Per-stream (text or video) parameters of one MM-DiT block."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        hd = hidden // heads
        self.q_norm = RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, int(hidden * mlp_ratio)), nn.GELU(approximate="tanh"),
                                 nn.Linear(int(hidden * mlp_ratio), hidden))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        nn.init.zeros_(self.ada[-1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[-1].bias)


class MMDiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.heads = heads
        self.txt = StreamWeights(hidden, heads, mlp_ratio, qk_norm)
        self.vid = StreamWeights(hidden, heads, mlp_ratio, qk_norm)

    def _qkv(self, s: StreamWeights, x: torch.Tensor, shift, scale):
        q, k, v = rearrange(s.qkv(modulate(s.norm1(x), shift, scale)), "b n (three h d) -> three b h n d",
                            three=3, h=self.heads)
        return s.q_norm(q), s.k_norm(k), v

    def forward(self, txt: torch.Tensor, vid: torch.Tensor, c: torch.Tensor, mask: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        L = txt.shape[1]
        mt = self.txt.ada(c).chunk(6, dim=1)
        mv = self.vid.ada(c).chunk(6, dim=1)
        qt, kt, vt = self._qkv(self.txt, txt, mt[0], mt[1])
        qv, kv, vv = self._qkv(self.vid, vid, mv[0], mv[1])
        cos, sin = rope
        qv, kv = apply_rope(qv, cos, sin), apply_rope(kv, cos, sin)
        q, k, v = torch.cat([qt, qv], 2), torch.cat([kt, kv], 2), torch.cat([vt, vv], 2)
        o = rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "b h n d -> b n (h d)")
        ot, ov = o[:, :L], o[:, L:]
        txt = txt + mt[2][:, None] * self.txt.proj(ot)
        txt = txt + mt[5][:, None] * self.txt.mlp(modulate(self.txt.norm2(txt), mt[3], mt[4]))
        vid = vid + mv[2][:, None] * self.vid.proj(ov)
        vid = vid + mv[5][:, None] * self.vid.mlp(modulate(self.vid.norm2(vid), mv[3], mv[4]))
        return txt, vid


class PyramidDiT(ModelMixin, ConfigMixin):
    """Velocity model v(history, current, t, text). See the module docstring for the token layout."""

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size: int = 2, hidden_size: int = 1536, depth: int = 24,
                 num_heads: int = 24, mlp_ratio: float = 4.0, qk_norm: bool = True, text_dim: int = 4096,
                 pooled_dim: int = 2048, causal: bool = True):
        super().__init__()
        p, H = patch_size, hidden_size
        if H % num_heads or (H // num_heads) % 2:
            raise ValueError(f"hidden_size {H} must split into {num_heads} heads of even size")
        self.patch = nn.Linear(in_channels * p * p, H)
        self.text_proj = nn.Linear(text_dim, H)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_emb = TimestepEmbedding(256, H)
        self.pooled_emb = nn.Sequential(nn.Linear(pooled_dim, H), nn.SiLU(), nn.Linear(H, H))
        self.blocks = nn.ModuleList([MMDiTBlock(H, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(H, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(H, 2 * H))
        self.final = nn.Linear(H, in_channels * p * p)
        for m in (self.final_ada[-1], self.final):  # zero output: the untrained model predicts 0 velocity
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return self.patch(rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p))

    def forward(self, history: list[torch.Tensor], current: torch.Tensor, timestep: torch.Tensor,
                tokens: torch.Tensor, text_mask: torch.Tensor, pooled: torch.Tensor,
                full_size: tuple[int, int]) -> torch.Tensor:
        """Velocity for `current`.

        history: list of (B, C, h_i, w_i) latent frames, oldest first (frame indices 0..n-1), may be empty.
        current: (B, C, T, h, w) noisy frame(s) at the stage resolution, frame indices n..n+T-1.
        timestep: (B,) global timestep in [0, 1000]; tokens (B, L, D_txt); text_mask (B, L) bool; pooled (B, P).
        full_size: (H, W) of the full-resolution latent (positions are coordinates of its patch grid).
        """
        p = self.config.patch_size
        B, C, T, h, w = current.shape
        FH, FW = full_size[0] // p, full_size[1] // p
        dim = self.config.hidden_size
        dev = current.device
        parts, frames = [], []
        for i, hf in enumerate(history):
            gh, gw = hf.shape[-2] // p, hf.shape[-1] // p
            parts.append(self._tokens(hf) + spatial_embedding(gh, gw, FH, FW, dim, True).to(dev, hf.dtype))
            frames.append(torch.full((gh * gw,), i, device=dev))
        n = len(history)
        cur_pos = spatial_embedding(h // p, w // p, FH, FW, dim, False).to(dev, current.dtype)
        for t in range(T):
            parts.append(self._tokens(current[:, :, t]) + cur_pos)
            frames.append(torch.full((cur_pos.shape[0],), n + t, device=dev))
        vid = torch.cat(parts, dim=1)
        frame_of_token = torch.cat(frames)
        txt = self.text_proj(tokens)
        c = self.time_emb(self.time_proj(timestep).to(txt.dtype)) + self.pooled_emb(pooled)
        mask = attention_mask(frame_of_token, text_mask.bool(), causal=self.config.causal)
        hd = dim // self.config.num_heads
        cos, sin = rope_angles(frame_of_token, hd)
        # RoPE acts on video tokens only (text queries/keys are concatenated before rotation is applied)
        rope = (cos.to(dev, txt.dtype), sin.to(dev, txt.dtype))
        for blk in self.blocks:
            txt, vid = blk(txt, vid, c, mask, rope)
        shift, scale = self.final_ada(c).chunk(2, dim=1)
        out = self.final(modulate(self.final_norm(vid[:, -T * cur_pos.shape[0]:]), shift, scale))
        return rearrange(out, "b (t h w) (c p q) -> b c t (h p) (w q)", t=T, h=h // p, w=w // p, p=p, q=p)


def build_dit(cfg, text_dim: int, pooled_dim: int) -> PyramidDiT:
    """The profile's MM-DiT (cfg.model; latent channels from cfg.vae)."""
    m = cfg.model
    return PyramidDiT(in_channels=cfg.vae.latent_channels, patch_size=m.patch_size, hidden_size=m.hidden_size,
                      depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, qk_norm=m.qk_norm,
                      text_dim=text_dim, pooled_dim=pooled_dim, causal=m.attention == "causal")
