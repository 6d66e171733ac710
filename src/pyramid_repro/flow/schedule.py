"""The pyramid schedule (docs/method.md §1-§2): stage sigmas, jump coefficients and timestep windows.

Convention of the official code: t = 0 is data, t = 1 is noise. Stage k (k = 0 coarsest) lives at resolution
full / 2^(K-1-k) and runs its local time t' from 1 (start point S_k) to 0 (end point E_k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyramid_repro.config import PyramidConfig


def renoise_coefficients(end_sigma: float, gamma: float) -> tuple[float, float, float]:
    """Start sigma of the next stage and the jump coefficients (alpha, beta) (Sec. 3.1, renoising).

    After nearest upsampling, x <- alpha * Up(x) + beta * eps with corrective noise of correlation -gamma.
    Matching the mean gives alpha = (1 - s') / (1 - e); matching the covariance gives
    beta = s' / sqrt(1 + gamma) and alpha * e = beta * sqrt(gamma). Solving,
    s' = e / (e + c (1 - e)) with c = sqrt(gamma / (1 + gamma))  (gamma = 1/3: s' = 2e / (1 + e)).
    """
    if not 0.0 <= end_sigma < 1.0:
        raise ValueError(f"end_sigma={end_sigma} must lie in [0, 1)")
    if gamma <= 0.0:
        raise ValueError(f"gamma={gamma} must be positive")
    c = math.sqrt(gamma / (1.0 + gamma))
    start = end_sigma / (end_sigma + c * (1.0 - end_sigma))
    alpha = (1.0 - start) / (1.0 - end_sigma)
    beta = start / math.sqrt(1.0 + gamma)
    return start, alpha, beta


@dataclass(frozen=True)
class PyramidSchedule:
    """Per-stage sigmas, jumps and global timestep windows. K = 1 is plain (full-sequence) flow matching."""

    stages: int
    end_sigmas: tuple[float, ...]
    start_sigmas: tuple[float, ...]
    jumps: tuple[tuple[float, float], ...]  # (alpha, beta) from stage k to k+1
    timestep_windows: tuple[tuple[float, float], ...]  # (t_max, t_min) of the global timestep per stage
    gamma: float
    num_timesteps: int = 1000

    @staticmethod
    def build(end_sigmas: list[float] | tuple[float, ...], gamma: float = 1.0 / 3.0,
              num_timesteps: int = 1000) -> "PyramidSchedule":
        K = len(end_sigmas)
        starts, jumps = [1.0], []
        for e in end_sigmas[:-1]:
            s, a, b = renoise_coefficients(e, gamma)
            starts.append(s)
            jumps.append((a, b))
        # Global timestep windows as the official scheduler: each stage gets a share of [1000, 1] equal to its
        # share of the total sigma distance sum_k (s_k - e_k) -> about 1000-744, 744-386, 386-1 for K = 3.
        dist = [s - e for s, e in zip(starts, end_sigmas)]
        total = sum(dist)
        N = num_timesteps
        grid = [float(N - i) for i in range(N)]  # global timesteps N, N-1, ..., 1
        windows, acc = [], 0.0
        for k in range(K):
            r0 = acc / total
            acc += dist[k]
            r1 = acc / total if k < K - 1 else 1.0
            windows.append((grid[int(r0 * N)], grid[min(int(r1 * N), N - 1)]))
        return PyramidSchedule(K, tuple(end_sigmas), tuple(starts), tuple(jumps), tuple(windows), gamma, N)

    @staticmethod
    def from_config(p: PyramidConfig) -> "PyramidSchedule":
        return PyramidSchedule.build(p.end_sigmas, p.gamma, p.timesteps)

    def timestep(self, stage: int, local_t):
        """Global timestep (what the model is conditioned on) at local time t' of a stage: linear in t'."""
        t_max, t_min = self.timestep_windows[stage]
        return t_min + local_t * (t_max - t_min)

    def scale(self, stage: int) -> int:
        """Down-sampling factor of a stage relative to full resolution (1/4, 1/2, 1 for K = 3)."""
        return 2 ** (self.stages - 1 - stage)
