"""Bootstrap intervals (eval/uncertainty.py): coverage of a known true value at the stated rate, cluster
resampling, the FID bands of the convergence report and the intervals the rendered reports show."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fid_helpers import write_fid_run

from pyramid_repro.config import load_config
from pyramid_repro.eval import uncertainty as uq
from pyramid_repro.eval.backends import FrechetToFixed, frechet_distance, frechet_interval
from pyramid_repro.eval.score import write_units
from pyramid_repro.report import render
from pyramid_repro.report.convergence import convergence_speedup, crossing_range, describe


def test_percentile_interval_of_a_mean_covers_the_truth_at_the_stated_rate():
    # 300 data sets of 60 Bernoulli(0.7) videos: the 95% interval of the mean should hold 0.7 in about 95% of them
    # (binomial sd of the coverage over 300 sets: 1.3 points); a too-narrow interval (e.g. a 68% one) fails
    hits = 0
    for s in range(300):
        x = np.random.default_rng(s).binomial(1, 0.7, size=60).astype(float)
        lo, hi = uq.bootstrap(lambda i: {"m": x[i].mean()}, np.arange(60), n_resamples=400, seed=s)["m"]
        hits += lo <= 0.7 <= hi
    assert 0.91 <= hits / 300 <= 0.985, hits / 300


def test_basic_interval_of_a_frechet_distance_covers_the_truth():
    # generated features N(0, I_4) against fixed reference statistics N(mu, I_4): the true distance is |mu|^2 = 1
    d, n, trials = 4, 120, 150
    mu, sigma = np.full(d, 0.5), np.eye(d)
    hits = {"basic": 0, "percentile": 0}
    to_ref = FrechetToFixed(mu, sigma)  # what the FID intervals resample with
    for s in range(trials):
        x = np.random.default_rng(s).normal(size=(n, d))
        for method in hits:
            lo, hi = uq.bootstrap(lambda i: {"f": to_ref(x[i])}, np.arange(n), n_resamples=300, method=method,
                                  seed=s)["f"]
            hits[method] += lo <= 1.0 <= hi
    assert 0.88 <= hits["basic"] / trials <= 0.99, hits
    # the plug-in distance is biased upwards, and the basic interval corrects for it at least as well
    assert hits["basic"] >= hits["percentile"] - 3


@pytest.mark.parametrize("n", [16, 200])
def test_fast_frechet_to_fixed_statistics_equals_clean_fids(n):
    # fewer samples than dimensions (a singular covariance, as a small FID point has) and more
    rng = np.random.default_rng(n)
    real = rng.normal(size=(3000, 32)) @ rng.normal(size=(32, 32)) * 0.3
    mu, sigma = real.mean(0), np.cov(real, rowvar=False)
    x = rng.normal(0.2, 1.0, size=(n, 32))
    ref = frechet_distance(x.mean(0), np.cov(x, rowvar=False), mu, sigma)
    assert FrechetToFixed(mu, sigma)(x) == pytest.approx(ref, rel=1e-6)


def test_frechet_interval_contains_the_estimate_and_narrows_with_more_videos():
    mu, sigma = np.zeros(3), np.eye(3)
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 320):
        per_video = [rng.normal(0.3, 1.0, size=(4, 3)) for _ in range(n)]
        fid, (lo, hi) = frechet_interval(per_video, list(range(n)), mu, sigma, n_resamples=200)
        assert lo < fid < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_clusters_are_resampled_whole():
    clusters = ["a", "a", "a", "b", "c", "c"]
    for idx in uq.resample_indices(clusters, 50, seed=1):
        drawn = [clusters[i] for i in idx]
        for c in set(drawn):  # a prompt's videos come together: every draw of 'a' brings all three
            assert drawn.count(c) % clusters.count(c) == 0
        assert len(set(map(tuple, [sorted(idx)]))) == 1
    with pytest.raises(ValueError, match="no units"):
        uq.resample_indices([], 10)
    with pytest.raises(ValueError, match="bootstrap method"):
        uq.interval_from(1.0, np.ones(5), method="bca")


def test_interval_helpers():
    assert uq.describe_interval([1.234, 5.678]) == "[1.2, 5.7]"
    assert uq.describe_interval(None) == "" and uq.describe_interval([np.nan, 1.0]) == ""
    assert uq.separated([1, 2], [3, 4]) and not uq.separated([1, 3], [2, 4]) and not uq.separated(None, [1, 2])


def test_speedup_is_stated_only_when_the_bands_separate():
    x = np.linspace(1, 30, 30)
    pyr = 10 + 100 / x
    base = 10 + 100 / (x / 3)  # three times slower
    narrow = lambda y: (y - 0.5, y + 0.5)  # noqa: E731
    wide = lambda y: (y - 30, y + 30)  # noqa: E731
    r = convergence_speedup(x, base, x, pyr, 25.0, base_band=narrow(base), pyr_band=narrow(pyr))
    assert r["separated"] and r["speedup_range"][0] < r["speedup"] < r["speedup_range"][1]
    # the 'common' target is the baseline's best: its upper band never gets there, so the range is open above
    r = convergence_speedup(x, base, x, pyr, "common", base_band=narrow(base), pyr_band=narrow(pyr))
    assert r["separated"] and r["speedup_range"][1] == np.inf and describe(r).endswith(", inf]")
    assert 0 < r["speedup_range"][0] < r["speedup"]
    assert describe(r).startswith(f"{r['speedup']:.2f}x [")
    r = convergence_speedup(x, base, x, pyr, 25.0, base_band=wide(base), pyr_band=wide(pyr))
    assert r["separated"] is False and describe(r).startswith("not separated")
    # without bands: as before
    r = convergence_speedup(x, base, x, pyr, "common")
    assert r["separated"] is None and describe(r) == f"{r['speedup']:.2f}x"
    # the lower band reaches a target first, the upper one last (inf when never)
    early, late = crossing_range(x, narrow(pyr), 20.0)
    assert early < late
    assert crossing_range(x, (pyr, pyr + 100), 20.0)[1] == np.inf


def _metrics(root: Path, experiment: str, backend: str, **kw) -> None:
    doc = {"backend": backend, "label": backend, "experiment": experiment, "profile": "smoke", "config_hash": "h",
           "commit": "c", "created_utc": "t", "dimensions": {}, "aggregate": {}, "fid": None, "n_videos": 8,
           "extra": {}} | kw
    f = root / "results" / "smoke" / experiment / "metrics" / f"{backend}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(doc))


def test_reports_show_the_intervals(tmp_path):
    cfg = load_config("smoke", {"results": str(tmp_path / "results"), "reports": str(tmp_path / "reports")})
    for name, total, lo, hi in (("pyramid", 80.0, 78.0, 82.0), ("fullseq", 79.0, 76.5, 81.0),
                                ("no_temporal_pyramid", 60.0, 57.0, 63.0)):
        _metrics(tmp_path, name, "synthetic", aggregate={"total": total, "quality": total, "semantic": total},
                 dimensions={"dynamic_degree": 0.5},
                 intervals={"aggregate": {"total": [lo, hi]}, "dimensions": {"dynamic_degree": [0.4, 0.6]}})
        _metrics(tmp_path, name, "fid-probe", fid=100.0 + total, intervals={"fid": [90.0 + total, 115.0 + total]})
    out = tmp_path / "reports"
    out.mkdir()
    render.render_table1(cfg, out)
    df = pd.read_csv(out / "table1.csv")
    row = df[(df["model"] == "pyramid") & (df["backend"] == "synthetic")].iloc[0]
    assert (row["total_lo"], row["total_hi"]) == (78.0, 82.0)
    assert (row["dynamic_degree_lo"], row["dynamic_degree_hi"]) == pytest.approx((40.0, 60.0))
    shown = render.with_intervals(df[df["model"] == "pyramid"], ["total", "fid"])
    assert "80.00 [78.0, 82.0]" in list(shown["total"]) and "180.00 [170.0, 195.0]" in list(shown["fid"])

    render.render_ablations(cfg, out)
    ab = pd.read_csv(out / "ablations.csv").set_index("experiment")
    # scored before per-video units were saved: the difference is shown, marginal, and decides nothing
    assert ab.loc["no_temporal_pyramid", "Δ total (synthetic)"] == pytest.approx(-20.0)
    assert not ab["Δ total (synthetic) paired"].fillna(False).any()
    assert not ab["Δ total (synthetic) separated"].fillna(False).any()
    assert ab.loc["fullseq", "total (synthetic) lo"] == 76.5
    # with units: the paired test decides (no_temporal_pyramid far below pyramid on the same prompts; fullseq not)
    rng = np.random.default_rng(0)
    prompts = [f"p{i}" for i in range(24)]
    base = rng.uniform(0.3, 0.9, 24)
    for name, shift in (("pyramid", 0.0), ("fullseq", 0.0), ("no_temporal_pyramid", -0.25)):
        noise = 0.0 if name == "pyramid" else rng.normal(0, 0.05, 24)
        write_units(cfg.layout.metrics_units(name, "synthetic"),
                    {"dim/dynamic_degree": np.clip(base + shift + noise, 0, 1), "motion_ratio": np.full(24, np.nan),
                     "jump_blockiness": np.zeros(24)},
                    [{"prompt_id": p, "sample_index": 0, "path": f"{p}.mp4"} for p in prompts])
    render.render_ablations(cfg, out)
    ab = pd.read_csv(out / "ablations.csv").set_index("experiment")
    assert ab.loc["no_temporal_pyramid", "Δ total (synthetic) separated"]
    assert ab.loc["no_temporal_pyramid", "Δ total (synthetic) hi"] < 0
    assert ab.loc["fullseq", "Δ total (synthetic) paired"] and not ab.loc["fullseq", "Δ total (synthetic) separated"]

    # FID curves with bands: the report draws them and states the speed-up of the points' plug-in FIDs, the claims
    # table's statistic (docs/method.md §11); the bands are the bias-corrected points' and decide nothing
    progress = np.arange(1, 7, dtype=float)
    write_fid_run(cfg, {"pyramid": list(1.6 / progress), "fullseq": list(1.6 / (progress / 3))},
                  {"pyramid": 1.0, "fullseq": 1.0})
    render.render_fid(cfg, out)
    text = (out / "fid_convergence.txt").read_text()
    assert "fullseq needs " in text and "x the pyramid's flops" in text
    table = pd.read_csv(out / "fid_convergence.csv")
    assert table["speedup"].notna().any() and table["separated"].isna().all()
