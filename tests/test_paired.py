"""Paired comparisons (eval/uncertainty.py `paired_difference`): coverage of a known effect, the width against an
unpaired comparison, the permutation test's false-positive rate, Holm and the power arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyramid_repro.eval import uncertainty as uq
from pyramid_repro.report.claims import SUPPORTED, UNDECIDED, decide


def _correlated_pairs(rng: np.random.Generator, n: int, delta: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """n prompts with a shared difficulty d ~ N(0, 1); arm A = d + delta + e, arm B = d + e' (e, e' ~ N(0, noise^2)):
    per-prompt correlation 1 / (1 + noise^2)."""
    d = rng.normal(size=n)
    return d + delta + rng.normal(0, noise, n), d + rng.normal(0, noise, n)


def _mean_difference(a: np.ndarray, b: np.ndarray):
    pool = np.concatenate([a, b])
    return lambda ia, ib: float(pool[ia].mean() - pool[ib].mean())


def test_paired_interval_covers_a_known_difference_and_is_narrower_than_the_unpaired_one():
    n, delta, noise, trials = 40, 0.3, 0.5, 200
    ids = [f"p{i}" for i in range(n)]
    hits, ratios = 0, []
    for s in range(trials):
        rng = np.random.default_rng(s)
        a, b = _correlated_pairs(rng, n, delta, noise)
        r = uq.paired_difference(_mean_difference(a, b), ids, ids, n_resamples=400, n_permutations=0, seed=s)
        hits += r.interval[0] <= delta <= r.interval[1]
        # the unpaired comparison: each arm resampled on its own (what interval overlap amounts to)
        own = rng.integers(0, n, size=(400, 2, n))
        unpaired = a[own[:, 0]].mean(1) - b[own[:, 1]].mean(1)
        lo, hi = np.quantile(unpaired, [0.025, 0.975])
        ratios.append((r.interval[1] - r.interval[0]) / (hi - lo))
    assert 0.92 <= hits / trials <= 0.98, hits / trials
    # SD of a paired difference over an unpaired one: sqrt(2 noise^2) / sqrt(2 (1 + noise^2)) = 0.447
    expected = np.sqrt(noise ** 2 / (1 + noise ** 2))
    assert np.mean(ratios) == pytest.approx(expected, abs=0.05)


def test_permutation_test_rarely_supports_a_claim_when_there_is_no_difference():
    n, trials = 30, 200
    ids = [f"p{i}" for i in range(n)]
    supported = 0
    for s in range(trials):
        a, b = _correlated_pairs(np.random.default_rng(1000 + s), n, 0.0, 0.5)
        r = uq.paired_difference(_mean_difference(a, b), ids, ids, n_resamples=300, n_permutations=300, seed=s)
        supported += decide(r.interval, r.p_value, direction=1) == SUPPORTED
    assert supported / trials <= 0.07, supported / trials


def test_permutation_p_value_is_small_for_a_clear_difference_and_the_estimate_is_the_plug_in():
    ids = [f"p{i}" for i in range(30)]
    a, b = _correlated_pairs(np.random.default_rng(7), 30, 1.0, 0.3)
    r = uq.paired_difference(_mean_difference(a, b), ids, ids, n_resamples=300, n_permutations=500, seed=1)
    assert r.p_value < 0.01 and r.interval[0] > 0
    assert r.estimate == pytest.approx(float(a.mean() - b.mean())) and r.plug_in == r.estimate
    assert decide(r.interval, r.p_value, 1) == SUPPORTED and decide(r.interval, r.p_value, -1) == "contradicted"
    assert decide((-0.1, 0.2), 0.001, 1) == UNDECIDED and decide(r.interval, r.p_value, 0).startswith("measured")


def test_clusters_are_resampled_jointly_and_must_be_shared():
    # two videos per prompt in each arm; a draw that picks a prompt brings its videos in both arms
    clusters = ["a", "a", "b", "b", "c", "c"]
    seen = []

    def effect(ia, ib):
        seen.append((sorted(ia), sorted(ib)))
        return 0.0

    uq.paired_difference(effect, clusters, clusters, n_resamples=20, n_permutations=5)
    for ia, ib in seen[:21]:
        assert [i + 6 for i in ia] == ib  # B's units are A's shifted by A's count in the pooled indexing
    with pytest.raises(ValueError, match="do not share"):
        uq.paired_difference(effect, ["a", "b"], ["a", "c"])


def test_basic_method_gives_an_estimate_inside_its_interval():
    # a statistic biased upwards under resampling (a variance-like one): the bias-corrected estimate sits inside
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=25), rng.normal(size=25)
    pool = np.concatenate([a, b])
    ids = [str(i) for i in range(25)]
    r = uq.paired_difference(lambda ia, ib: float(pool[ia].var() + len(set(ia.tolist())) * 0.0 - pool[ib].mean()),
                             ids, ids, n_resamples=300, n_permutations=0, method="basic")
    assert r.interval[0] <= r.estimate <= r.interval[1]


def test_holm_adjustment():
    assert uq.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert uq.holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)
    assert uq.holm([]) == []


def test_units_for_power():
    # at se = effect / 2.8 (z 1.96 + 0.84) the current number of prompts is just enough
    assert uq.units_for_power(1.0, 1 / 2.8016, 40) == pytest.approx(40, rel=0.01)
    assert uq.units_for_power(1.0, 2 / 2.8016, 40) == pytest.approx(160, rel=0.01)
    assert uq.units_for_power(0.0, 0.1, 40) == float("inf")


def test_order_quantiles_keep_censored_resamples_infinite():
    v = np.array([1.0, 2.0, 3.0, np.inf, np.inf, np.nan])
    lo, hi = uq.order_quantiles(v, [0.1, 0.9])
    assert lo == 1.0 and hi == np.inf


def test_unit_swaps_keep_the_false_positive_rate_with_prompt_effects_and_few_prompts():
    # 6 prompts x 2 seeds sharing a strong prompt effect: pairs swap on their own (cluster swaps alone could not go
    # below p = 1/32), and with no difference a claim is still rarely called supported
    ids = [f"p{i // 2}" for i in range(12)]
    supported = 0
    for s in range(200):
        rng = np.random.default_rng(5000 + s)
        d = np.repeat(rng.normal(0, 2.0, 6), 2)
        a, b = d + rng.normal(0, 0.5, 12), d + rng.normal(0, 0.5, 12)
        r = uq.paired_difference(_mean_difference(a, b), ids, ids, n_resamples=200, n_permutations=200, seed=s,
                                 swap="unit")
        supported += decide(r.interval, r.p_value, direction=1) == SUPPORTED
    assert supported / 200 <= 0.07, supported / 200
    a, b = np.arange(12.0) + 3.0, np.arange(12.0)
    r = uq.paired_difference(_mean_difference(a, b), ids, ids, n_resamples=50, n_permutations=2000, swap="unit")
    assert r.p_value < 0.005  # 2^12 sign patterns: a clear difference gets a small p-value
    with pytest.raises(ValueError, match="one B unit per A unit"):
        uq.paired_difference(_mean_difference(a, b[:11]), ids, ids[:11], swap="unit")


def test_a_censored_effect_counts_label_swaps_censored_either_way():
    """docs/method.md §11: the test is two-sided, so an observed +inf (the baseline never reaches the target) counts
    every swap whose statistic is infinite, -inf (the swapped pyramid never reaches it) included."""
    na = 2

    def effect(ia: np.ndarray, ib: np.ndarray) -> float:
        # two clusters: +inf with both in their own arm, -inf with both swapped, 0 with one swapped
        swapped = int(np.sum(ia >= na))
        return math.inf if swapped == 0 else -math.inf if swapped == len(ia) else 0.0

    p = uq.paired_difference(effect, ["c0", "c1"], ["c0", "c1"], n_resamples=10, n_permutations=4000, seed=0)
    assert p.plug_in == math.inf
    # a quarter of the swaps give +inf and a quarter -inf: p near 1/2 (a one-sided count would give about 1/4)
    assert 0.45 < p.p_value < 0.55, p.p_value
