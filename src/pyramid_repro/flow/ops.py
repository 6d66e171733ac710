"""Resampling operators of the spatial pyramid (docs/method.md §1.2) and the corrective block noise (§2.4).

All operators act on the last two (spatial) dimensions, so images (B, C, H, W) and video latents
(B, C, T, H, W) are handled alike (per frame).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _spatial(fn, x: torch.Tensor) -> torch.Tensor:
    lead = x.shape[:-2]
    y = fn(x.reshape(-1, 1, *x.shape[-2:]))
    return y.reshape(*lead, *y.shape[-2:])


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x0.5 per side (for an exact halving this is the mean of each 2x2 block)."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"downsample: spatial size {tuple(x.shape[-2:])} must be even")
    return _spatial(lambda t: F.interpolate(t, scale_factor=0.5, mode="bilinear", align_corners=False), x)


def downsample_noise(n: torch.Tensor) -> torch.Tensor:
    """Downsample unit-variance noise and rescale by 2 so it keeps unit variance (the repo's rule)."""
    return downsample(n) * 2.0


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 per side."""
    return _spatial(lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest"), x)


def block_mean(z: torch.Tensor) -> torch.Tensor:
    """Mean over each 2x2 block, broadcast back to the block (the projection onto block-constant fields)."""
    return upsample(downsample(z))


def corrective_noise(shape: tuple[int, ...], gamma: float, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Block noise with unit variance and correlation -gamma between the 4 values of every 2x2 block.

    Covariance per block is (1 + gamma) I - gamma J = (1 + gamma)(I - P) + (1 - 3 gamma) P with P = J / 4, so
    eps = sqrt(1 + gamma) (z - blockmean z) + sqrt(1 - 3 gamma) blockmean(z) (gamma = 1/3: sqrt(4/3)(z - mean z)).
    """
    if not 0.0 <= gamma <= 1.0 / 3.0 + 1e-12:
        raise ValueError(f"gamma={gamma}: a 2x2 block covariance with correlation -gamma needs 0 <= gamma <= 1/3")
    z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    m = block_mean(z)
    return math.sqrt(1.0 + gamma) * (z - m) + math.sqrt(max(0.0, 1.0 - 3.0 * gamma)) * m
