"""Euler sampling through the spatial pyramid with renoising at the jump points (docs/method.md §2).

The sampler is model-agnostic: it takes `velocity(x, timestep, stage) -> v` (timestep: (B,) global timesteps).
Autoregressive video generation calls it once per latent frame with a closure that adds the history; the
full-sequence baseline calls it once for the whole (B, C, T, H, W) latent with a 1-stage schedule.
"""

from __future__ import annotations

from typing import Callable

import torch

from pyramid_repro.flow.ops import corrective_noise as block_noise
from pyramid_repro.flow.ops import upsample
from pyramid_repro.flow.schedule import PyramidSchedule

VelocityFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def local_sigmas(n_steps: int, min_sigma: float = 1e-3) -> torch.Tensor:
    """Local times of one stage: linspace(1, min_sigma, n) then 0, as the official pipeline (n Euler steps)."""
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps} must be >= 1")
    return torch.cat([torch.linspace(1.0, min_sigma, n_steps, dtype=torch.float64),
                      torch.zeros(1, dtype=torch.float64)])


def guided(cond: VelocityFn, uncond: VelocityFn, scale: float) -> VelocityFn:
    """Classifier-free guidance: v = v_u + scale (v_c - v_u); scale 1 = conditional only."""
    if scale == 1.0:
        return cond

    def fn(x: torch.Tensor, t: torch.Tensor, stage: int) -> torch.Tensor:
        vu = uncond(x, t, stage)
        return vu + scale * (cond(x, t, stage) - vu)

    return fn


def jump(x: torch.Tensor, schedule: PyramidSchedule, stage: int, corrective: bool = True, renoise: bool = True,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """End of stage `stage` -> start of stage `stage + 1`: x <- alpha Up(x) + beta eps.

    `corrective=False` (ablation) uses i.i.d. eps with the same unit marginal variance; `renoise=False` only
    upsamples.
    """
    x = upsample(x)
    if not renoise:
        return x
    alpha, beta = schedule.jumps[stage]
    if corrective:
        eps = block_noise(tuple(x.shape), schedule.gamma, generator, x.device, x.dtype)
    else:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return alpha * x + beta * eps


def sample(velocity: VelocityFn, full_shape: tuple[int, ...], schedule: PyramidSchedule, steps: list[int],
           generator: torch.Generator | None = None, corrective_noise: bool = True, renoise: bool = True,
           min_sigma: float = 1e-3, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
           progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Generate latents of `full_shape` ((B, C, H, W) or (B, C, T, H, W)) from pure noise at the coarsest stage."""
    K = schedule.stages
    if len(steps) != K:
        raise ValueError(f"steps={steps}: need one Euler step count per stage ({K})")
    f = schedule.scale(0)
    if full_shape[-1] % f or full_shape[-2] % f:
        raise ValueError(f"spatial size {full_shape[-2:]} must be divisible by {f} for a {K}-stage pyramid")
    shape = (*full_shape[:-2], full_shape[-2] // f, full_shape[-1] // f)
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    B = shape[0]
    for k in range(K):
        ts = local_sigmas(steps[k], min_sigma)
        for i in range(steps[k]):
            t, t_next = float(ts[i]), float(ts[i + 1])
            timestep = torch.full((B,), float(schedule.timestep(k, t)), device=device, dtype=dtype)
            x = x + (t_next - t) * velocity(x, timestep, k)
            if progress is not None:
                progress(k, i)
        if k < K - 1:
            x = jump(x, schedule, k, corrective_noise, renoise, generator)
    return x
