"""Pyramidal flow matching against the paper's numbers and against theory (docs/method.md §1-§2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyramid_repro.config import load_config
from pyramid_repro.flow import (
    PyramidSchedule, build_history, corrective_noise, downsample, history_stages, jump, pyramid_latents,
    renoise_coefficients, sample, sample_stage, training_path, upsample,
)
from pyramid_repro.flow.paths import pyramid_noise, stage_endpoints

SCHED = PyramidSchedule.build([0.667, 0.334, 0.0], 1.0 / 3.0)


@pytest.mark.parametrize("end,expected", [(0.667, (0.80024, 0.59988, 0.69303)), (0.334, (0.50075, 0.74963, 0.43366))])
def test_renoise_coefficients_match_the_official_repo(end, expected):
    got = renoise_coefficients(end, 1.0 / 3.0)
    assert got == pytest.approx(expected, abs=5e-5)


def test_schedule_is_derived_from_end_sigmas():
    assert SCHED.start_sigmas == pytest.approx((1.0, 0.80024, 0.50075), abs=5e-5)
    # the repo's global timestep windows: about 1000->744, 744->386, 386->1
    assert SCHED.timestep_windows == ((1000.0, 744.0), (744.0, 386.0), (386.0, 1.0))
    cfg = load_config("paper")
    assert PyramidSchedule.from_config(cfg.pyramid) == SCHED
    full = PyramidSchedule.build([0.0])
    assert full.start_sigmas == (1.0,) and full.timestep_windows == ((1000.0, 1.0),)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="end_sigma"):
        renoise_coefficients(1.0, 1 / 3)
    with pytest.raises(ValueError, match="gamma"):
        corrective_noise((1, 1, 4, 4), gamma=0.5)
    with pytest.raises(ValueError, match="even"):
        downsample(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="weights"):
        sample_stage([0, 0, 0])


def test_noise_downsampling_keeps_unit_variance_and_ops_shapes():
    g = torch.Generator().manual_seed(0)
    n = torch.randn(2000, 1, 8, 8, generator=g)
    for lvl in pyramid_noise(n, 3):
        assert lvl.var().item() == pytest.approx(1.0, abs=0.03)
    v = torch.randn(2, 4, 5, 8, 8)
    assert downsample(v).shape == (2, 4, 5, 4, 4) and upsample(v).shape == (2, 4, 5, 16, 16)
    assert [t.shape[-1] for t in pyramid_latents(v, 3)] == [2, 4, 8]


def _block_cov(x: torch.Tensor) -> torch.Tensor:
    """Covariance of the 4 values of the top-left 2x2 block across samples (B, 1, H, W)."""
    b = x[:, 0, :2, :2].reshape(len(x), 4).double()
    b = b - b.mean(0)
    return b.T @ b / (len(x) - 1)


def test_corrective_noise_has_the_block_covariance():
    eps = corrective_noise((40000, 1, 4, 4), 1.0 / 3.0, torch.Generator().manual_seed(1))
    cov = _block_cov(eps)
    target = (1 + 1 / 3) * torch.eye(4, dtype=torch.float64) - 1 / 3 * torch.ones(4, 4, dtype=torch.float64)
    assert torch.allclose(cov, target, atol=0.04)


@pytest.mark.parametrize("stage", [0, 1])
def test_jump_matches_the_next_stage_start_distribution(stage):
    """End of stage k, upsampled + renoised, has the mean and 2x2 block covariance of the start of stage k+1;
    with i.i.d. noise (ablation) the block correlation does not match, as theory says."""
    N = 40000
    g = torch.Generator().manual_seed(2)
    x = torch.full((N, 1, 8, 8), 0.7)  # fixed clean latent: all the randomness is noise
    x[:, :, :, 4:] = -0.4
    clean = pyramid_latents(x, 3)
    noise = pyramid_noise(torch.randn(x.shape, generator=g), 3)
    _, end = stage_endpoints(clean, noise, SCHED, stage)
    noise_next = pyramid_noise(torch.randn(x.shape, generator=g), 3)
    start_next, _ = stage_endpoints(clean, noise_next, SCHED, stage + 1)
    tol_mean = 5 * math.sqrt(1.0 / N)
    tol_cov = 6 * math.sqrt(2.0 / N)
    for corrective, should_match in ((True, True), (False, False)):
        got = jump(end, SCHED, stage, corrective=corrective, generator=g)
        mean_ok = (got.mean(0) - start_next.mean(0)).abs().max().item() < tol_mean
        cov_diff = (_block_cov(got) - _block_cov(start_next)).abs().max().item()
        assert mean_ok, "renoising must match the mean in both variants"
        assert (cov_diff < tol_cov) == should_match, f"corrective={corrective}: block cov diff {cov_diff:.4f}"


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_training_endpoints_have_the_paper_marginals(stage):
    N = 20000
    g = torch.Generator().manual_seed(3)
    x = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).expand(N, 1, 8, 8).contiguous()
    s, e = SCHED.start_sigmas[stage], SCHED.end_sigmas[stage]
    clean = pyramid_latents(x[:1], 3)
    coarse = upsample(clean[stage - 1]) if stage else torch.zeros_like(clean[stage])
    for lt, sig, mean in ((1.0, s, (1 - s) * coarse), (0.0, e, (1 - e) * clean[stage])):
        ts = training_path(x, SCHED, stage, g, local_t=torch.full((N,), lt))
        assert ts.x_t.shape[-1] == 8 >> (2 - stage)
        assert torch.allclose(ts.x_t.mean(0), mean[0], atol=5 * max(sig, 1e-3) / math.sqrt(N) + 1e-6)
        assert ts.x_t.std(0).mean().item() == pytest.approx(sig, abs=0.02)
        assert float(ts.timestep[0]) == pytest.approx(SCHED.timestep(stage, lt))
    # the target is S - E, and x_t interpolates linearly with one shared noise
    ts = training_path(x[:4], SCHED, stage, torch.Generator().manual_seed(4))
    t = ts.local_t.view(-1, 1, 1, 1)
    start = ts.x_t + (1 - t) * ts.target
    end = ts.x_t - t * ts.target
    assert torch.allclose(end + ts.target, start, atol=1e-5)


def test_training_path_works_for_video_and_fullseq():
    x = torch.randn(3, 4, 5, 8, 8)
    ts = training_path(x, SCHED, 1, torch.Generator().manual_seed(0))
    assert ts.x_t.shape == (3, 4, 5, 4, 4) and ts.timestep.shape == (3,)
    assert ((ts.timestep <= 744) & (ts.timestep >= 386)).all()
    full = PyramidSchedule.build([0.0])
    n = torch.randn_like(x)
    ts = training_path(x, full, 0, noise=n, local_t=torch.full((3,), 0.25))
    assert torch.allclose(ts.x_t, 0.25 * n + 0.75 * x, atol=1e-6) and torch.allclose(ts.target, n - x, atol=1e-6)


def test_stage_sampling_follows_weights():
    g = torch.Generator().manual_seed(0)
    draws = np.bincount([sample_stage([1, 2, 1], g) for _ in range(8000)], minlength=3) / 8000
    assert draws == pytest.approx([0.25, 0.5, 0.25], abs=0.02)


def test_history_is_compressed_as_the_temporal_pyramid():
    assert history_stages(5, 2, 3) == [0, 0, 0, 1, 2]
    assert history_stages(3, 1, 3) == [0, 0, 1]
    assert history_stages(2, 0, 3) == [0, 0]
    assert history_stages(3, 0, 3, temporal_pyramid=False) == [2, 2, 2]
    frames = torch.randn(2, 4, 4, 8, 8)
    hist = build_history(frames, 2, 3, corruption=(0.0, 0.0))
    assert [h.latent.shape[-1] for h in hist] == [2, 2, 4, 8]
    assert torch.allclose(hist[-1].latent, frames[:, :, 3])
    corrupted = build_history(frames, 2, 3, corruption=(0.2, 0.3), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(corrupted[-1].latent, frames[:, :, 3])


# --- analytic velocity: Gaussian data, optimal velocity in closed form -------------------------------------


def _linear(op, d_in_shape):
    """Matrix of a linear spatial operator acting on (1, 1, h, w) fields."""
    h, w = d_in_shape
    eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    return op(eye).reshape(h * w, -1).T  # (d_out, d_in)


def _optimal_velocity(schedule: PyramidSchedule, mu: torch.Tensor, cov: torch.Tensor, size: int):
    """E[S - E | x_t] for x ~ N(mu, cov) on a size x size single-channel latent, every stage."""
    K = schedule.stages
    A = []  # full -> stage k
    for k in range(K):
        def op(t, k=k):
            for _ in range(K - 1 - k):
                t = downsample(t)
            return t
        A.append(_linear(op, (size, size)))
    mats = []
    for k in range(K):
        s, e = schedule.start_sigmas[k], schedule.end_sigmas[k]
        dk = A[k].shape[0]
        hk = int(math.isqrt(dk))
        UD = _linear(lambda t: upsample(downsample(t)), (hk, hk)) if k > 0 else torch.zeros(dk, dk, dtype=torch.float64)
        mats.append((s, e, A[k], UD @ A[k]))

    def velocity(x: torch.Tensor, timestep: torch.Tensor, k: int) -> torch.Tensor:
        s, e, Ak, UDA = mats[k]
        t_max, t_min = schedule.timestep_windows[k]
        t = (float(timestep[0]) - t_min) / (t_max - t_min)
        sig = t * s + (1 - t) * e
        Bm = t * (1 - s) * UDA + (1 - t) * (1 - e) * Ak
        Cm = (1 - s) * UDA - (1 - e) * Ak
        Kxx = sig**2 * torch.eye(Bm.shape[0], dtype=torch.float64) + Bm @ cov @ Bm.T
        Kvx = (s - e) * sig * torch.eye(Bm.shape[0], dtype=torch.float64) + Cm @ cov @ Bm.T
        flat = x.reshape(len(x), -1).double()
        v = Cm @ mu + (flat - Bm @ mu) @ torch.linalg.solve(Kxx, Kvx.T)
        return v.reshape(x.shape).to(x.dtype)

    return velocity


@pytest.mark.parametrize("ends", [[0.667, 0.334, 0.0], [0.0]], ids=["pyramid", "fullseq"])
def test_sampler_reproduces_gaussian_data(ends):
    size, N = 4, 20000
    g = torch.Generator().manual_seed(5)
    L = torch.randn(16, 16, generator=g, dtype=torch.float64) * 0.25 + torch.eye(16, dtype=torch.float64) * 0.5
    cov = L @ L.T
    mu = torch.linspace(-1, 1, 16, dtype=torch.float64)
    sched = PyramidSchedule.build(ends, 1.0 / 3.0)
    vel = _optimal_velocity(sched, mu, cov, size)
    steps = [60] * sched.stages
    out = sample(vel, (N, 1, size, size), sched, steps, generator=g, dtype=torch.float64).reshape(N, -1)
    emp_mu, emp_cov = out.mean(0), torch.cov(out.T)
    assert (emp_mu - mu).abs().max().item() < 0.05
    assert (emp_cov - cov).abs().max().item() < 0.08 * cov.abs().max().item()
    if len(ends) > 1:  # without corrective noise the same sampler misses the covariance
        bad = sample(vel, (N, 1, size, size), sched, steps, generator=g, dtype=torch.float64,
                     corrective_noise=False).reshape(N, -1)
        assert (torch.cov(bad.T) - cov).abs().max().item() > (emp_cov - cov).abs().max().item()
