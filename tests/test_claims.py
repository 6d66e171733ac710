"""The claims report (report/claims.py): the jump-point blockiness statistic (on real fullseq samples too), the
speed-up's first-evaluation and censored cases, the claims table's verdicts on a run with known effects, and its
bad-input errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.eval.backends import FrechetToFixed, jump_blockiness
from pyramid_repro.eval.score import write_units
from pyramid_repro.report import claims as cl
from pyramid_repro.report.convergence import convergence_speedup, describe


def _smooth_image(seed: int, size: int = 16, sigma: float = 1.5) -> torch.Tensor:
    """A clean image without any grid: white noise low-passed by a Gaussian of `sigma` pixels (in Fourier space, so
    it is the same everywhere), (1, 3, size, size) around 128 with standard deviation 40."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    gauss = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    x = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(3, size, size))) * gauss))
    return torch.from_numpy((x - x.mean()) / x.std() * 40 + 128)[None].float()


def _frames(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jump_blockiness_fires_on_nearest_upsampling_and_not_on_clean_or_bilinear(seed):
    base = _smooth_image(seed)
    nearest = F.interpolate(base, scale_factor=2, mode="nearest")
    bilinear = F.interpolate(base, scale_factor=2, mode="bilinear", align_corners=False)
    b_nn, b_bl = jump_blockiness(_frames(nearest), 1), jump_blockiness(_frames(bilinear), 1)
    assert b_nn > 1.0, b_nn  # flat 2x2 blocks: every difference sits on a jump-point edge (at most log 3 here)
    assert abs(b_bl) < 0.25, b_bl  # a bilinear jump steps a little more at the jump points, far less than nearest
    assert abs(jump_blockiness(_frames(base), 1)) < 0.1  # clean images
    assert abs(jump_blockiness(_frames(_smooth_image(seed, 32)), 2)) < 0.1
    # the statistic looks at the grid it is given: with latent pixels of 2 pixels, the 2x nearest up-sampling steps
    # on every latent-pixel boundary, jump point or not (as a decoder's own grid would): no jump-point artifact;
    # a nearest up-sampling of that latent grid (blocks of 2 latent pixels) is one
    assert abs(jump_blockiness(_frames(nearest), 2)) < 0.1
    jumped = F.interpolate(F.interpolate(base, scale_factor=0.5, mode="area"), scale_factor=4, mode="nearest")
    assert jump_blockiness(_frames(jumped), 2) > 1.5
    # a video of frames gives the same number as its frames stacked
    video = np.stack([_frames(nearest)] * 3)
    assert jump_blockiness(video, 1) == pytest.approx(b_nn)
    with pytest.raises(ValueError, match="latent_pixel"):
        jump_blockiness(video, 16)


def test_first_evaluation_case_states_no_speedup_and_a_never_reached_target_a_censored_bound():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    # both curves below the target from their first point: the ratio of first points is no speed-up
    r = convergence_speedup(x, np.array([5.0, 4, 3, 2]), x, np.array([4.0, 3, 2, 1]), 10.0)
    assert r["speedup"] is None and "not identified" in r["reason"]
    assert describe(r).startswith("undecided")
    # the baseline never gets to the pyramid's best FID: a censored lower bound x_last / x_pyramid
    pyr, base = np.array([20.0, 10, 5, 2]), np.array([30.0, 28, 26, 25])
    r = convergence_speedup(x, base, x, pyr, "pyramid_best", base_band=(base - 1, base + 1),
                            pyr_band=(pyr - 1, pyr + 1))
    assert r["reason"] == "not reached by baseline" and r["lower_bound"] == pytest.approx(4.0 / r["pyramid_x"])
    assert describe(r).startswith(">= ") and "censored" in describe(r)


def _arm(means: list[float], caption_effect: np.ndarray, seed: int, x: np.ndarray) -> cl.FidArm:
    rng = np.random.default_rng(seed)
    n, d = caption_effect.shape
    feats = [m + caption_effect + rng.normal(0, 0.5, (n, d)) for m in means]
    return cl.FidArm(x=x, features=feats, units=np.array([f"caption {i}" for i in range(n)]))


def test_paired_speedup_decides_a_fast_pyramid_and_not_identical_curves():
    d, n = 4, 64
    caption = np.random.default_rng(0).normal(0, 1.0, (n, d))
    to_real = FrechetToFixed(np.zeros(d), np.eye(d) * 1.25)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    fast = _arm([1.6, 0.5, 0.3, 0.2], caption, 1, x)
    slow = _arm([1.6, 1.3, 1.0, 0.8], caption, 2, x)
    r = cl.speedup_statistic(fast, slow, to_real, seed=0)
    p = r["speedup"]["common"]["paired"]
    assert p.interval[0] > 0 and p.p_value < 0.05, (p, r["speedup"]["common"]["reason"])
    assert cl.decide(p.interval, p.p_value, 1) == cl.SUPPORTED
    assert r["final_fid"].estimate < 0  # the pyramid's last FID is lower
    # the slow baseline never gets to the pyramid's best FID: a censored lower bound x_last / x_pyramid, and
    # resamples that are censored keep an infinite upper end
    best = r["speedup"]["pyramid_best"]
    assert best["reason"] == "not reached by baseline" and best["lower_bound"] >= 1.0
    assert best["paired"].interval[1] == np.inf
    same = cl.speedup_statistic(_arm([1.6, 1.0, 0.7, 0.5], caption, 3, x), _arm([1.6, 1.0, 0.7, 0.5], caption, 4, x),
                                to_real, seed=0)["speedup"]["common"]["paired"]
    assert cl.decide(same.interval, same.p_value, 1) == cl.UNDECIDED
    # both curves at the common target from their first point: not identified
    flat = cl.speedup_statistic(_arm([0.1, 0.7, 0.7, 0.7], caption, 6, x), _arm([0.1, 0.7, 0.7, 0.7], caption, 7, x),
                                to_real, seed=0, kinds=("common",))["speedup"]["common"]
    assert "not identified" in flat["reason"] and not np.isfinite(flat["observed"])
    with pytest.raises(ValueError, match="same captions"):
        other = _arm([1.0] * 4, caption, 5, x)
        other.units = other.units[::-1]
        cl.speedup_statistic(fast, other, to_real)


def _units(tmp_cfg, experiment: str, ratios: np.ndarray, blocks: np.ndarray, prompts: list[str]) -> None:
    path = tmp_cfg.layout.metrics_units(experiment, "synthetic")
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = [{"prompt_id": p, "sample_index": i % 2, "path": f"{p}-{i % 2}.mp4"} for i, p in enumerate(prompts)]
    sc = np.clip(0.9 + 0.05 * np.sin(np.arange(len(prompts))), 0, 1)
    write_units(path, {"dim/subject_consistency": sc, "dim/temporal_flickering": sc,
                       "motion_ratio": ratios, "jump_blockiness": blocks}, samples)


def test_claims_table_on_a_run_with_known_effects(tmp_path):
    cfg = load_config("smoke", {"results": str(tmp_path / "results"), "reports": str(tmp_path / "reports"),
                                "experiments": ["pyramid", "fullseq", "no_corrective_noise"]})
    rng = np.random.default_rng(0)
    prompts = [f"p{i // 2}" for i in range(40)]  # 20 prompts x 2 samples
    moving = np.array([i % 4 < 2 for i in range(40)])  # half the prompts move
    good = np.where(moving, rng.uniform(0.8, 1.2, 40), np.nan)
    bad = np.where(moving, rng.uniform(-0.1, 0.2, 40), np.nan)
    blocks = rng.normal(0.1, 0.05, 40)
    _units(cfg, "pyramid", good, blocks, prompts)
    _units(cfg, "fullseq", bad, blocks + rng.normal(0, 0.05, 40), prompts)
    _units(cfg, "no_corrective_noise", good, blocks + 0.01 * rng.normal(size=40), prompts)
    df = cl.claims_frame(cfg, curves={})
    assert list(df.columns) == cl.COLUMNS
    row = df[(df.claim_id == "temporal_pyramid") & (df.arm_b == "fullseq") & (df.statistic == "direction_accuracy")]
    assert row.verdict.item() == cl.SUPPORTED and row.estimate.item() == pytest.approx(1.0)
    assert row.p_holm.item() >= row.p_value.item()
    row = df[(df.claim_id == "temporal_pyramid") & (df.arm_b == "fullseq") & (df.statistic == "travel_score")]
    assert row.verdict.item() == cl.SUPPORTED
    # no effect in blockiness: undecided, with the prompts 80% power would need, and the row says so in words
    row = df[df.claim_id == "corrective_noise"]
    assert row.verdict.item() == cl.UNDECIDED and row.needed_for_power.item() > 0
    assert row.note.item().startswith("not decided: no difference in block artifacts at the jump points")
    assert re.search(r"mean per video: no_corrective_noise \+0\.\d+, pyramid \+0\.\d+", row.note.item())
    # experiments the profile does not run: listed with the command that runs them
    nr = df[df.verdict == cl.NOT_RUN]
    assert set(nr.claim_id) >= {"causal_attention", "history_corruption"}
    assert nr.note.str.contains("snakemake --cores all --config").all()
    assert nr[nr.claim_id == "causal_attention"].note.iloc[0].count("bidirectional") == 1
    # no FID curves: the spatial claim is undecided and says why; the token claim is arithmetic
    sp = df[df.claim_id == "spatial_pyramid"]
    assert (sp.verdict == cl.UNDECIDED).all() and sp.note.str.contains("no FID curve").all()
    tok = df[df.claim_id == "token_saving"].iloc[0]
    assert tok.verdict == cl.SUPPORTED and tok.estimate > 85
    out = tmp_path / "reports"
    out.mkdir()
    cl.render_claims(cfg, out, {}, df)
    assert pd.read_csv(out / "claims.csv").shape[0] == len(df)
    md = (out / "claims.md").read_text()
    assert "**supported**" in md and "not run by this profile" in md
    assert (out / "claims.pdf").stat().st_size > 5000


def test_claims_rows_of_a_run_scored_before_units_are_labelled(tmp_path):
    cfg = load_config("smoke", {"results": str(tmp_path / "results"),
                                "experiments": ["pyramid", "fullseq", "no_corrective_noise"]})
    df = cl.claims_frame(cfg)
    row = df[(df.claim_id == "temporal_pyramid")].iloc[0]
    assert row.verdict == cl.UNDECIDED and "units were not saved" in row.note


def test_bad_claims_file_names_the_claim_and_field(tmp_path):
    f = tmp_path / "claims.yaml"
    f.write_text(json.dumps({"x": {"claim": "c", "where": "w", "kind": "motion", "comparisons": [["pyramid", "nope"]],
                                   "statistics": ["direction_accuracy"], "direction": 1}}))
    with pytest.raises(ConfigError, match=r"claim 'x'.*unknown experiment"):
        cl.load_claims(f)
    f.write_text(json.dumps({"x": {"claim": "c", "kind": "motion"}}))
    with pytest.raises(ConfigError, match="missing field"):
        cl.load_claims(f)
    assert {c.id for c in cl.load_claims()} >= {"spatial_pyramid", "temporal_pyramid", "corrective_noise"}


def _latent_jump(video: np.ndarray, latent_pixel: int) -> np.ndarray:
    """Frames (T, H, W, C) with their latent grid halved and nearest up-sampled back: the blocks a jump point
    leaves when nothing corrects them (each 2x2 block of latent pixels one value)."""
    b = 2 * latent_pixel
    T, H, W, C = video.shape
    coarse = video[:, :H // b * b, :W // b * b].astype(np.float64).reshape(T, H // b, b, W // b, b, C).mean((2, 4))
    return np.repeat(np.repeat(coarse, b, axis=1), b, axis=2)


def test_jump_blockiness_reads_about_zero_on_real_fullseq_samples(smoke_run):
    """`fullseq` has no jump points: its decoded samples (a real run, with the VAE's own latent-pixel grid) read
    near 0 next to the same frames with a jump's nearest up-sampling of their latent grid. At the smoke profile's
    16 x 16 frames (4 x 4 latent pixels) the one jump-point edge per axis sits in the middle and both edges beside it
    touch a border latent pixel, whose decoder padding steps a little: -0.36 there, against +2.8 for the jump."""
    from pyramid_repro.data.video_io import read_video
    from pyramid_repro.eval.backends import latent_pixel_size

    cfg = load_config("smoke", {"results": str(smoke_run / "results")})
    lp = latent_pixel_size(cfg)
    folder = cfg.layout.samples("fullseq", cfg.eval.suite)
    videos = [read_video(folder / s["path"])[0] for s in json.loads((folder / "samples.json").read_text())["samples"]]
    assert videos
    own = np.array([jump_blockiness(v, lp) for v in videos])
    jumped = np.array([jump_blockiness(_latent_jump(v, lp), lp) for v in videos])
    assert jumped.min() > 2.0, jumped
    assert own.max() < 0.5 and abs(own.mean()) < 0.2 * jumped.min(), (own, jumped)
