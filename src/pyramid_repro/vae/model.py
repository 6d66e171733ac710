"""Causal 3D video VAE (docs/method.md §4): MAGVIT-v2-like, the first frame encoded on its own.

Why not a diffusers VAE: diffusers' causal video VAEs (AutoencoderKLMagvit, AutoencoderKLCogVideoX, ...) fix
their temporal compression (4x) in the architecture and do not expose the paper's 8x8x8 as configuration, so the
design is written here, small and configurable, as a diffusers ModelMixin/ConfigMixin (save_pretrained /
from_pretrained work).

Two knobs for small scale (tiny profile), both off in the paper config: `patch_size` > 1 folds p x p pixel
patches into channels before the first convolution and unfolds them after the last (pixel-unshuffle / shuffle,
per frame), so the convolutions run at 1/p resolution and their spatial compression is spatial_compression / p;
`norm_eps` is the GroupNorm epsilon. On the flat-coloured synthetic world a per-frame GroupNorm with the usual
eps = 1e-6 slowed learning (tiny, 150 s: 20.6 dB vs 24.5 dB without norm), while no norm at all diverged at
lr 2e-3 (activations blew up, the posterior variance hit its clamp and the decoder fell back to the mean frame);
eps = 1 keeps the bound on large activations and leaves small ones almost untouched.

Causality: every temporal operation looks only backwards: causal 3D convolutions pad the past (replicating the
first frame), normalisation is per frame, temporal down-sampling averages frames (1,2), (3,4), ... and keeps
frame 0 alone, temporal up-sampling repeats each later latent frame. 1 + k*T frames -> 1 + k latent frames.
Chunked encoding/decoding carries each causal convolution's last frames in a cache, so chunks give the same
output as the whole clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class CausalConv3d(nn.Module):
    """3x3x3 convolution that sees only the current and earlier frames; optional cache for chunked use."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.pad_t = kernel - 1
        self.conv = nn.Conv3d(cin, cout, kernel, padding=(0, kernel // 2, kernel // 2))
        self.cache: torch.Tensor | None = None
        self.use_cache = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_t:
            past = self.cache if (self.use_cache and self.cache is not None) else x[:, :, :1].expand(
                -1, -1, self.pad_t, -1, -1)
            x = torch.cat([past, x], dim=2)
            if self.use_cache:
                self.cache = x[:, :, -self.pad_t:].detach()
        return self.conv(x)


def frame_norm(channels: int, eps: float = 1e-6) -> nn.Module:
    return nn.GroupNorm(min(32, channels // 4) if channels >= 8 else 1, channels, eps=eps)


def per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D map (N, C, H, W) -> (N, C', H', W') to every frame of a (B, C, T, H, W) video."""
    B, C, T, H, W = x.shape
    y = fn(x.transpose(1, 2).reshape(B * T, C, H, W))
    return y.reshape(B, T, *y.shape[1:]).transpose(1, 2)


class PerFrame(nn.Module):
    """Apply a 2D module frame by frame (keeps normalisation statistics within a frame: causal)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(self.module, x)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float = 1e-6):
        super().__init__()
        self.n1, self.c1 = PerFrame(frame_norm(cin, eps)), CausalConv3d(cin, cout)
        self.n2, self.c2 = PerFrame(frame_norm(cout, eps)), CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class Down(nn.Module):
    """Spatial x0.5 (strided conv) and/or temporal x0.5 (frame 0 alone, then mean of pairs)."""

    def __init__(self, ch: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv = PerFrame(nn.Conv2d(ch, ch, 3, stride=2, padding=1)) if spatial else nn.Identity()
        self.first_chunk = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.temporal:
            head, rest = (x[:, :, :1], x[:, :, 1:]) if self.first_chunk else (x[:, :, :0], x)
            if rest.shape[2] % 2:
                raise ValueError(f"temporal down-sampling needs 1 + 2k frames, got {x.shape[2]}")
            B, C, T, H, W = rest.shape
            rest = rest.reshape(B, C, T // 2, 2, H, W).mean(3)
            x = torch.cat([head, rest], dim=2)
        return x


class Up(nn.Module):
    """Spatial x2 (nearest + conv) and/or temporal x2 (frame 0 alone, later frames repeated)."""

    def __init__(self, ch: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv = PerFrame(nn.Conv2d(ch, ch, 3, padding=1)) if spatial else nn.Identity()
        self.first_chunk = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal:
            head, rest = (x[:, :, :1], x[:, :, 1:]) if self.first_chunk else (x[:, :, :0], x)
            x = torch.cat([head, rest.repeat_interleave(2, dim=2)], dim=2)
        if self.spatial:
            x = per_frame(lambda f: self.conv.module(F.interpolate(f, scale_factor=2.0, mode="nearest")), x)
        return x


def _levels(channels: list[int], spatial: int, temporal: int) -> list[tuple[bool, bool]]:
    """Which levels halve space / time: the first log2(compression) levels, never the last."""
    ns, nt = int(math.log2(spatial)), int(math.log2(temporal))
    if 2**ns != spatial or 2**nt != temporal:
        raise ValueError(f"compression must be powers of 2, got spatial={spatial} temporal={temporal}")
    if max(ns, nt) > len(channels) - 1:
        raise ValueError(f"vae.channels {channels} has {len(channels) - 1} down-sampling levels; "
                         f"{spatial}x spatial / {temporal}x temporal needs {max(ns, nt)}")
    return [(i < ns, i < nt) for i in range(len(channels) - 1)]


class CausalVideoVAE(ModelMixin, ConfigMixin):
    """Encoder/decoder with a diagonal-Gaussian latent; video (B, 3, 1 + kT, H, W) in [-1, 1]."""

    @register_to_config
    def __init__(self, in_channels: int = 3, channels: tuple[int, ...] = (128, 256, 512, 512),
                 layers_per_block: int = 2, latent_channels: int = 16, spatial_compression: int = 8,
                 temporal_compression: int = 8, patch_size: int = 1, norm_eps: float = 1e-6):
        super().__init__()
        ch = list(channels)
        if patch_size < 1 or spatial_compression % patch_size:
            raise ValueError(f"vae.patch_size={patch_size} must be >= 1 and divide "
                             f"vae.spatial_compression={spatial_compression}")
        levels = _levels(ch, spatial_compression // patch_size, temporal_compression)
        eps, pix = norm_eps, in_channels * patch_size**2
        # encoder
        self.enc_in = CausalConv3d(pix, ch[0])
        enc: list[nn.Module] = []
        for i, (s, t) in enumerate(levels):
            for j in range(layers_per_block):
                enc.append(ResBlock(ch[i], ch[i], eps))
            enc.append(Down(ch[i], s, t))
            enc.append(ResBlock(ch[i], ch[i + 1], eps))
        for _ in range(layers_per_block):
            enc.append(ResBlock(ch[-1], ch[-1], eps))
        self.encoder = nn.Sequential(*enc)
        self.enc_out = nn.Sequential(PerFrame(frame_norm(ch[-1], eps)), nn.SiLU(),
                                     CausalConv3d(ch[-1], 2 * latent_channels))
        # Start with a near-deterministic posterior (std ~ e^-4): with the paper's KL weight of 1e-12 nothing
        # would shrink a unit-variance posterior quickly, and its noise would swamp the decoder early on.
        out_conv = self.enc_out[-1].conv
        with torch.no_grad():
            out_conv.weight[latent_channels:].mul_(0.1)
            out_conv.bias[latent_channels:].fill_(-8.0)
        # decoder (mirror)
        self.dec_in = CausalConv3d(latent_channels, ch[-1])
        dec: list[nn.Module] = [ResBlock(ch[-1], ch[-1], eps) for _ in range(layers_per_block)]
        for i in reversed(range(len(levels))):
            s, t = levels[i]
            dec.append(ResBlock(ch[i + 1], ch[i], eps))
            dec.append(Up(ch[i], s, t))
            for _ in range(layers_per_block):
                dec.append(ResBlock(ch[i], ch[i], eps))
        self.decoder = nn.Sequential(*dec)
        self.dec_out = nn.Sequential(PerFrame(frame_norm(ch[0], eps)), nn.SiLU(), CausalConv3d(ch[0], pix))

    # -- helpers -------------------------------------------------------------------------------------------
    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, C*p*p, T, H/p, W/p), frame by frame (identity for patch_size 1)."""
        p = self.config.patch_size
        return x if p == 1 else per_frame(lambda f: F.pixel_unshuffle(f, p), x)

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of _fold."""
        p = self.config.patch_size
        return x if p == 1 else per_frame(lambda f: F.pixel_shuffle(f, p), x)

    def latent_frames(self, frames: int) -> int:
        T = self.config.temporal_compression
        if (frames - 1) % T:
            raise ValueError(f"a clip of {frames} frames is not 1 + k*{T} (vae.temporal_compression)")
        return 1 + (frames - 1) // T

    def _set_streaming(self, part: nn.Module, on: bool) -> None:
        for m in part.modules():
            if isinstance(m, CausalConv3d):
                m.use_cache, m.cache = on, None
            if isinstance(m, (Down, Up)):
                m.first_chunk = True

    def _after_first_chunk(self, part: nn.Module) -> None:
        for m in part.modules():
            if isinstance(m, (Down, Up)):
                m.first_chunk = False

    # -- encode / decode -----------------------------------------------------------------------------------
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.latent_frames(x.shape[2])
        h = self.enc_out(self.encoder(self.enc_in(self._fold(x))))
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None,
               chunk_frames: int = 0) -> torch.Tensor:
        """Latent (B, C, 1 + k, H/s, W/s): the posterior mean (or a sample). `chunk_frames` > 0 encodes causal
        chunks of that many latent frames with conv caches (same result as the whole clip)."""
        if chunk_frames:
            return self._encode_chunked(x, chunk_frames)
        mean, logvar = self.encode_moments(x)
        if not sample:
            return mean
        return mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, device=mean.device)

    def decode(self, z: torch.Tensor, chunk_frames: int = 0) -> torch.Tensor:
        if chunk_frames:
            return self._decode_chunked(z, chunk_frames)
        return self._unfold(self.dec_out(self.decoder(self.dec_in(z))))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mean, logvar = self.encode_moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, device=mean.device)
        return self.decode(z), mean, logvar

    def _encode_chunked(self, x: torch.Tensor, chunk: int) -> torch.Tensor:
        T = self.config.temporal_compression
        parts = [self.enc_in, self.encoder, self.enc_out]
        for p in parts:
            self._set_streaming(p, True)
        out, start, first = [], 0, True
        try:
            while start < x.shape[2]:
                n = (1 + (chunk - 1) * T) if first else chunk * T
                h = self._fold(x[:, :, start:start + n])
                for p in parts:
                    h = p(h)
                out.append(h.chunk(2, dim=1)[0])
                for p in parts:
                    self._after_first_chunk(p)
                start, first = start + n, False
        finally:
            for p in parts:
                self._set_streaming(p, False)
        return torch.cat(out, dim=2)

    def _decode_chunked(self, z: torch.Tensor, chunk: int) -> torch.Tensor:
        parts = [self.dec_in, self.decoder, self.dec_out]
        for p in parts:
            self._set_streaming(p, True)
        out = []
        try:
            for start in range(0, z.shape[2], chunk):
                h = z[:, :, start:start + chunk]
                for p in parts:
                    h = p(h)
                out.append(self._unfold(h))
                for p in parts:
                    self._after_first_chunk(p)
        finally:
            for p in parts:
                self._set_streaming(p, False)
        return torch.cat(out, dim=2)


def build_vae(cfg) -> CausalVideoVAE:
    """The VAE of a profile (cfg.vae)."""
    v = cfg.vae
    return CausalVideoVAE(channels=tuple(v.channels), layers_per_block=v.layers_per_block,
                          latent_channels=v.latent_channels, spatial_compression=v.spatial_compression,
                          temporal_compression=v.temporal_compression, patch_size=v.patch_size,
                          norm_eps=v.norm_eps)
