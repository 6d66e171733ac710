"""Training paths (docs/method.md §1 and §9): coupled stage endpoints, x_t and the velocity target.

With K = 1 this is standard rectified flow matching at full resolution (the full-sequence baseline):
S = n, E = x, x_t = t n + (1 - t) x, v = n - x.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyramid_repro.flow.ops import downsample, downsample_noise, upsample
from pyramid_repro.flow.schedule import PyramidSchedule


@dataclass
class TrainingSample:
    """One stage-homogeneous batch on a stage's path."""

    x_t: torch.Tensor  # noisy input at the stage resolution
    target: torch.Tensor  # velocity target S - E
    stage: int
    local_t: torch.Tensor  # (B,) local time t' in (0, 1] (t' = 1 - u / N)
    timestep: torch.Tensor  # (B,) global timestep fed to the model
    clean: torch.Tensor  # clean latent at the stage resolution (Down^k x)


def pyramid_latents(x: torch.Tensor, stages: int) -> list[torch.Tensor]:
    """Clean latent at every stage resolution, coarsest first (bilinear x0.5 per level)."""
    out = [x]
    for _ in range(stages - 1):
        out.insert(0, downsample(out[0]))
    return out


def pyramid_noise(n_full: torch.Tensor, stages: int) -> list[torch.Tensor]:
    """The noise drawn once at full resolution, downsampled (x2, unit variance) to every stage, coarsest first."""
    out = [n_full]
    for _ in range(stages - 1):
        out.insert(0, downsample_noise(out[0]))
    return out


def sample_stage(weights: list[float] | tuple[float, ...], generator: torch.Generator | None = None) -> int:
    """Draw a pyramid stage with probability proportional to `weights` (uniform in the paper, [1,2,1] in the repo)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"stage weights {list(weights)} must be non-negative with a positive sum")
    if generator is not None:  # drawn where the generator lives (a CUDA generator draws on the GPU)
        w = w.to(generator.device)
    return int(torch.multinomial(w, 1, generator=generator).item())


def stage_endpoints(clean: list[torch.Tensor], noise: list[torch.Tensor], schedule: PyramidSchedule,
                    stage: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled endpoints of stage k with one shared noise n (at stage resolution):
    S_k = s_k n + (1 - s_k) Up(Down x_k),  E_k = e_k n + (1 - e_k) x_k."""
    s, e = schedule.start_sigmas[stage], schedule.end_sigmas[stage]
    n, xk = noise[stage], clean[stage]
    coarse = upsample(clean[stage - 1]) if stage > 0 else torch.zeros_like(xk)
    start = s * n + (1.0 - s) * coarse
    end = e * n + (1.0 - e) * xk
    return start, end


def training_path(x: torch.Tensor, schedule: PyramidSchedule, stage: int,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                  local_t: torch.Tensor | None = None) -> TrainingSample:
    """Sample a point on stage `stage`'s path for a batch of clean full-resolution latents x
    ((B, C, H, W) images or (B, C, T, H, W) video).

    Local time as the official trainer: an index u ~ U{0..N-1} of N = num_timesteps per-stage steps,
    t' = 1 - u / N, global timestep = the stage window at t'.
    """
    if not 0 <= stage < schedule.stages:
        raise ValueError(f"stage={stage} out of range for a {schedule.stages}-stage pyramid")
    B = x.shape[0]
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    clean = pyramid_latents(x, schedule.stages)
    noises = pyramid_noise(noise, schedule.stages)
    start, end = stage_endpoints(clean, noises, schedule, stage)
    if local_t is None:
        N = schedule.num_timesteps
        u = torch.randint(0, N, (B,), generator=generator, device=x.device)
        local_t = 1.0 - u.to(x.dtype) / N
    t = local_t.view(B, *([1] * (x.dim() - 1)))
    x_t = t * start + (1.0 - t) * end
    return TrainingSample(x_t, start - end, stage, local_t, schedule.timestep(stage, local_t), clean[stage])
