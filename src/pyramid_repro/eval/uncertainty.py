"""Bootstrap intervals for every proxy number the suite reports (docs/method.md §10).

A score here is a statistic of a finite set of generated videos (a mean over videos, VBench's weighted
aggregate of such means, a Fréchet distance of their frames' features), so it moves when other videos are drawn.
`bootstrap` resamples the videos with replacement, prompt by prompt when a prompt has several videos (cluster
bootstrap: the videos of one prompt share its difficulty, so they are drawn together), recomputes the statistic
and reads the interval off the resampled values (Efron & Tibshirani 1993, ch. 13):

* ``percentile``: the [a/2, 1 - a/2] quantiles of the resampled statistic; used for means and their weighted
  aggregates, whose plug-in estimate is unbiased;
* ``basic``: 2 x estimate minus those quantiles, which removes the first-order bias of a plug-in statistic. A
  Fréchet distance from n samples overestimates the true one by about tr(Sigma)/n and a resample overestimates it
  once more, so the percentile interval would sit too high; the basic interval is centred on the bias-corrected
  value. Used for FID.

`tests/test_uncertainty.py` checks that both cover a known true value at close to the stated rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import stdtr, stdtrit  # Student's t distribution function and its inverse
from scipy.stats import norm

LEVEL = 0.95
N_RESAMPLES = 1000
METHODS = ("percentile", "basic")


def resample_indices(clusters: Sequence[Any], n_resamples: int, seed: int = 0) -> list[np.ndarray]:
    """n_resamples index arrays over the units (videos): whole clusters (prompts) drawn with replacement, as many
    clusters as there are. `clusters[i]` names unit i's cluster; units of one cluster stay together."""
    labels = np.asarray([str(c) for c in clusters])
    if len(labels) == 0:
        raise ValueError("bootstrap: no units to resample")
    groups = [np.nonzero(labels == c)[0] for c in dict.fromkeys(labels)]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(groups), size=(n_resamples, len(groups)))
    return [np.concatenate([groups[g] for g in row]) for row in draws]


def interval_from(estimate: float, resampled: np.ndarray, level: float = LEVEL, method: str = "percentile",
                  keep_infinite: bool = False) -> tuple[float, float]:
    """(lo, hi) from a statistic's resampled values (NaNs, e.g. a resample without any video of a dimension,
    dropped). With `keep_infinite` a resample at +-inf (a censored speed-up) stays in and the quantiles are order
    statistics (`order_quantiles`), so an end of the interval can be infinite."""
    if method not in METHODS:
        raise ValueError(f"bootstrap method {method!r}; expected one of {METHODS}")
    values = np.asarray(resampled, dtype=float)
    values = values[~np.isnan(values) if keep_infinite else np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2
    q_lo, q_hi = order_quantiles(values, [a, 1 - a]) if keep_infinite else np.quantile(values, [a, 1 - a])
    if method == "basic":
        return float(2 * estimate - q_hi), float(2 * estimate - q_lo)
    return float(q_lo), float(q_hi)


def bootstrap_draws(statistic: Callable[[np.ndarray], dict[str, float | None]], clusters: Sequence[Any],
                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The full-sample value of every number `statistic(indices)` returns and its resampled values (NaN where a
    resample gives none), for the names whose full-sample value is a number."""
    estimate = statistic(np.arange(len(clusters)))
    names = [k for k, v in estimate.items() if v is not None and np.isfinite(v)]
    draws: dict[str, list[float]] = {k: [] for k in names}
    for idx in resample_indices(clusters, n_resamples, seed):
        values = statistic(idx)
        for k in names:
            v = values.get(k)
            draws[k].append(float("nan") if v is None else float(v))
    return {k: float(estimate[k]) for k in names}, {k: np.array(v) for k, v in draws.items()}


def bootstrap(statistic: Callable[[np.ndarray], dict[str, float | None]], clusters: Sequence[Any],
              n_resamples: int = N_RESAMPLES, level: float = LEVEL, method: str = "percentile", seed: int = 0
              ) -> dict[str, list[float]]:
    """Intervals of every number `statistic(indices)` returns ({name: value}; indices select units, with
    repeats). Returns {name: [lo, hi]} at `level`, for the names whose full-sample value is a number."""
    estimate, draws = bootstrap_draws(statistic, clusters, n_resamples, seed)
    return {k: list(interval_from(estimate[k], draws[k], level, method)) for k in estimate}


def bias_corrected(estimate: float, resampled: np.ndarray) -> float:
    """The estimate that goes with a basic interval: 2 x plug-in - median of the resampled values. The bootstrap
    reads a plug-in statistic's bias off how far its resamples sit from it (a resampled FID repeats units and so
    sits higher, as the plug-in sits above the truth); subtracting it centres the estimate where the basic interval
    is centred, so the estimate always lies inside its own interval (docs/method.md §10)."""
    values = np.asarray(resampled, dtype=float)
    values = values[np.isfinite(values)]
    return float(2 * estimate - np.median(values)) if len(values) else float(estimate)


def describe_interval(values: Sequence[float] | None, digits: int = 1) -> str:
    """'[lo, hi]' for a table cell, '' when there is none."""
    if not values or any(v is None or not np.isfinite(v) for v in values):
        return ""
    return f"[{values[0]:.{digits}f}, {values[1]:.{digits}f}]"


def separated(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Do two intervals not overlap?"""
    if not a or not b:
        return False
    return a[1] < b[0] or b[1] < a[0]


def metadata(method: str, unit: str, n_units: int, n_clusters: int, n_resamples: int = N_RESAMPLES,
             level: float = LEVEL) -> dict[str, Any]:
    """What an interval is, for the metrics JSON and the report footers."""
    return {"level": level, "method": f"{method} bootstrap", "resampled": unit, "units": n_units,
            "clusters": n_clusters, "resamples": n_resamples}


# -- paired comparisons (docs/method.md §11) -----------------------------------------------------------------------
N_PERMUTATIONS = 2000
POWER = 0.8


def order_quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles read off the sorted values without interpolation (an order statistic, numpy's `inverted_cdf`), so a
    resample whose statistic is +-inf (a censored speed-up) gives an infinite end instead of NaN."""
    v = np.sort(np.asarray(values, dtype=float)[~np.isnan(np.asarray(values, dtype=float))])
    if len(v) == 0:
        return np.full(len(qs), np.nan)
    return np.quantile(v, qs, method="inverted_cdf")


@dataclass
class Paired:
    """A paired comparison of two arms (`paired_difference`): the effect, its interval, the label-swap p-value and
    what was resampled. `estimate` and `interval` come from one method: the plug-in effect with its percentile
    interval, or ("basic") the bias-corrected effect 2 x plug-in - median of the resamples with the basic interval,
    which always contains it."""

    estimate: float
    interval: tuple[float, float]
    p_value: float
    plug_in: float
    se: float
    clusters: int
    units: tuple[int, int]
    method: str
    resamples: int
    permutations: int
    level: float = LEVEL
    censored: float = 0.0
    # what the p-value comes from, and (several training runs per arm, `two_level_difference`) the runs per arm,
    # the per-run variance of each arm's statistic and the prompt-level variance of the effect
    test: str = "label-swap permutation"
    runs: tuple[int, int] = (1, 1)
    run_variance: tuple[float, float] | None = None
    prompt_variance: float | None = None
    df: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "interval": list(self.interval), "p_value": self.p_value,
                "plug_in": self.plug_in, "se": self.se, "clusters": self.clusters, "units": list(self.units),
                "method": f"paired {self.method} bootstrap + {self.test}", "resamples": self.resamples,
                "permutations": self.permutations, "level": self.level, "censored": self.censored,
                "runs": list(self.runs)}


def _groups(clusters: Sequence[Any]) -> dict[str, np.ndarray]:
    labels = np.asarray([str(c) for c in clusters])
    return {c: np.nonzero(labels == c)[0] for c in dict.fromkeys(labels)}


def paired_difference(effect: Callable[[np.ndarray, np.ndarray], float], clusters_a: Sequence[Any],
                      clusters_b: Sequence[Any], n_resamples: int = N_RESAMPLES,
                      n_permutations: int = N_PERMUTATIONS, level: float = LEVEL, method: str = "percentile",
                      seed: int = 0, swap: str = "cluster") -> Paired:
    """Compare two arms measured on the same units (prompts, captions): `effect(ia, ib)` is the statistic of arm A's
    units `ia` against arm B's units `ib` (indices into the *pooled* units: A's are 0..nA-1, B's nA..nA+nB-1), with
    no effect at 0 (a difference, or the log of a ratio).

    * Interval: the clusters shared by both arms are drawn with replacement, one draw for both arms (a cluster
      brings all of its units in A and in B), so what the two arms share (the prompt's difficulty, the seed's
      noise) cancels in the effect instead of widening its interval (Efron & Tibshirani 1993, ch. 13; paired
      design). A statistic that is not a difference of means (an FID) is resampled the same way.
    * p-value: label-swap permutation test of "no difference between the arms" (Good 2005): each cluster's units
      swap arms with probability 1/2 (`swap="cluster"`) or, when unit i of A and unit i of B are one pair (the same
      prompt and seed: `swap="unit"`, equal counts), each pair swaps on its own; two-sided,
      (1 + #{|T*| >= |T|}) / (1 + permutations). Under "no difference" the two videos of a pair are exchangeable
      whatever the prompt, so pairs may swap apart; with few clusters (6 moving prompts x 2 seeds) cluster swaps
      alone could not give a p-value below 1/32.

    Both arms must have units in the same clusters (a cluster in one arm only is a ConfigError-like ValueError
    naming it)."""
    ga, gb = _groups(clusters_a), _groups(clusters_b)
    if set(ga) != set(gb):
        only = sorted(set(ga) ^ set(gb))[:5]
        raise ValueError(f"paired comparison: the arms do not share their units; in one arm only: {only}")
    if not ga:
        raise ValueError("paired comparison: no units")
    na = len(clusters_a)
    names = list(ga)
    a = [ga[c] for c in names]
    b = [gb[c] + na for c in names]
    plug_in = float(effect(np.concatenate(a), np.concatenate(b)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_resamples, len(names)))
    boot = np.array([effect(np.concatenate([a[g] for g in row]), np.concatenate([b[g] for g in row]))
                     for row in draws], dtype=float)
    interval = interval_from(plug_in, boot, level, method, keep_infinite=True)
    estimate = 2 * plug_in - order_quantiles(boot, [0.5])[0] if method == "basic" else plug_in
    if swap == "unit":
        if na != len(clusters_b):
            raise ValueError(f"paired comparison: unit swaps need one B unit per A unit, got {na} and "
                             f"{len(clusters_b)}")
        ia0 = np.arange(na)
        flips = rng.random((n_permutations, na)) < 0.5
        perm = np.array([effect(np.where(f, ia0 + na, ia0), np.where(f, ia0, ia0 + na)) for f in flips], dtype=float)
    elif swap == "cluster":
        swaps = rng.random((n_permutations, len(names))) < 0.5
        perm = np.array([effect(np.concatenate([b[g] if s else a[g] for g, s in enumerate(row)]),
                                np.concatenate([a[g] if s else b[g] for g, s in enumerate(row)])) for row in swaps],
                        dtype=float)
    else:
        raise ValueError(f"paired comparison: swap {swap!r}; expected 'cluster' or 'unit'")
    perm = perm[~np.isnan(perm)]
    # two-sided: an infinite (censored) effect counts every swap censored either way, +inf or -inf (method.md §11)
    p = float((1 + np.sum(np.abs(perm) >= abs(plug_in) - 1e-12)) / (1 + len(perm)))
    se, censored = resampled_spread(boot, level)
    return Paired(estimate=float(estimate), interval=(float(interval[0]), float(interval[1])), p_value=p,
                  plug_in=plug_in, se=se, clusters=len(names), units=(na, len(clusters_b)), method=method,
                  resamples=n_resamples, permutations=len(perm), level=level, censored=censored)


def resampled_spread(boot: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """(standard error, censored share) of a statistic's resampled values (docs/method.md §11). A resample at +-inf
    is censored (a speed-up whose curve never reaches its target). The standard error is the spread of the finite
    resamples only while at most (1 - level) / 2 of them are censored, i.e. while the `level` interval still has
    two finite ends; beyond that the finite resamples are a selected few and their spread is no standard error of
    the statistic (2 finite resamples of 1000 once gave one), so it is NaN and no power number follows from it."""
    values = np.asarray(boot, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), 0.0
    finite = values[np.isfinite(values)]
    censored = float(1.0 - len(finite) / len(values))
    if censored > (1.0 - level) / 2 or len(finite) < 2:
        return float("nan"), censored
    return float(finite.std(ddof=1)), censored


def two_level_difference(effect: Callable[[np.ndarray, np.ndarray], float], clusters: Sequence[Any],
                         runs: tuple[int, int], n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                         method: str = "percentile", seed: int = 0) -> Paired:
    """Compare two methods each trained `runs` = (R_A, R_B) >= 2 times, every run measured on the same units
    (docs/method.md §11, "several training runs"). The pooled units are run by run: unit i of A's run r is
    r * n + i, of B's run s R_A * n + s * n + i (n = len(clusters), the same cluster order in every run), and
    `effect(ia, ib)` is the statistic of A's pooled units `ia` against B's `ib`, as in `paired_difference`.

    * Two-level bootstrap: each resample draws the clusters (prompts) with replacement, one draw shared by both arms
      and every run (the pairing is kept), and, within each arm, R runs from its R runs with replacement.
    * Standard error: the resamples' variance misses a share 1/R of each arm's run-to-run variance (a bootstrap over
      R runs sees (R-1)/R of it); each arm's run variance V = s^2 / R comes from the jackknife over its runs
      (exact for a mean), and se^2 = var(resamples) + V_A / R_A + V_B / R_B.
    * Test and interval at the level of the method: t = estimate / se against Student's t with the
      Welch-Satterthwaite degrees of freedom of the three parts (V_A with R_A - 1, V_B with R_B - 1, the prompt
      part with clusters - 1); the interval is estimate +- t_df x se. A label swap over runs would test the same
      null but with 3 runs per arm has 20 relabellings, so p >= 0.1; swaps of prompts or videos test "these two
      training runs are alike", not the methods.
    `method` "basic" centres the estimate on 2 x plug-in - median of the resamples (bias-corrected FID)."""
    ra, rb = (int(r) for r in runs)
    if ra < 2 or rb < 2:
        raise ValueError(f"two-level comparison: each arm needs two or more training runs, got {ra} and {rb}")
    groups = list(_groups(clusters).values())
    if not groups:
        raise ValueError("paired comparison: no units")
    n = len(clusters)

    def pooled(offset: int, run_ids: Sequence[int], within: np.ndarray) -> np.ndarray:
        return (offset + n * np.asarray(run_ids)[:, None] + within[None, :]).ravel()

    all_groups = np.concatenate(groups)
    a_all, b_all = pooled(0, range(ra), all_groups), pooled(ra * n, range(rb), all_groups)
    plug_in = float(effect(a_all, b_all))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(groups), size=(n_resamples, len(groups)))
    runs_a, runs_b = rng.integers(0, ra, size=(n_resamples, ra)), rng.integers(0, rb, size=(n_resamples, rb))
    boot = np.empty(n_resamples)
    for i, row in enumerate(draws):
        within = np.concatenate([groups[g] for g in row])
        boot[i] = effect(pooled(0, runs_a[i], within), pooled(ra * n, runs_b[i], within))

    def jackknife(k: int, leave_out) -> float:
        vals = np.array([leave_out(r) for r in range(k)], dtype=float)
        return float((k - 1) / k * np.sum((vals - vals.mean()) ** 2))

    v_a = jackknife(ra, lambda r: effect(pooled(0, [q for q in range(ra) if q != r], all_groups), b_all))
    v_b = jackknife(rb, lambda r: effect(a_all, pooled(ra * n, [q for q in range(rb) if q != r], all_groups)))
    finite = boot[np.isfinite(boot)]
    var_boot = float(finite.var(ddof=1)) if len(finite) > 1 else math.nan
    se2 = var_boot + v_a / ra + v_b / rb
    v_p = max(se2 - v_a - v_b, 0.0)
    parts = [(v_a, ra - 1), (v_b, rb - 1)] + ([(v_p, len(groups) - 1)] if len(groups) > 1 else [])
    denominator = sum(v * v / d for v, d in parts)
    df = se2 * se2 / denominator if denominator > 0 else math.inf
    estimate = 2 * plug_in - order_quantiles(boot, [0.5])[0] if method == "basic" else plug_in
    se = math.sqrt(se2) if np.isfinite(se2) else math.nan
    if np.isfinite(estimate) and np.isfinite(se) and se > 0:
        q = float(stdtrit(df, 1 - (1 - level) / 2))
        interval = (estimate - q * se, estimate + q * se)
        p = float(2 * stdtr(df, -abs(estimate) / se))
    else:  # censored (infinite) effects or no spread: the resamples' order-statistic interval, no test
        lo, hi = interval_from(plug_in, boot, level, method, keep_infinite=True)
        interval, p = (lo, hi), math.nan
    return Paired(estimate=float(estimate), interval=(float(interval[0]), float(interval[1])), p_value=p,
                  plug_in=plug_in, se=se, clusters=len(groups), units=(ra * n, rb * n),
                  method=f"two-level ({method}: runs within arm, prompts shared)", resamples=n_resamples,
                  permutations=0, level=level, test="run-level Welch-Satterthwaite t", runs=(ra, rb),
                  run_variance=(v_a * ra, v_b * rb), prompt_variance=v_p, df=float(df))


def runs_for_power(effect: float, run_variance: tuple[float, float], prompt_variance: float, clusters: int,
                   level: float = LEVEL, power: float = POWER, max_runs: int = 100) -> float:
    """How many training runs per arm the two-level test (`two_level_difference`) needs to detect `effect` with
    `power`, at the measured per-run variances (s_A^2, s_B^2) and prompt-level variance: the smallest R with
    |effect| / se(R) >= t_(1-a/2, df) + t_(power, df), se(R)^2 = prompt_variance + (s_A^2 + s_B^2) / R and df the
    Welch-Satterthwaite degrees of freedom at R. inf when the effect is 0 or `max_runs` do not reach it (the prompt
    part alone is too wide: more prompts, not more runs); NaN when a part is not a number."""
    sa, sb = run_variance
    if not all(np.isfinite(v) for v in (effect, sa, sb, prompt_variance)):
        return float("nan")
    for r in range(2, max_runs + 1):
        va, vb = sa / r, sb / r
        se2 = prompt_variance + va + vb
        if se2 <= 0:
            return float(r) if effect != 0 else float("inf")
        parts = [(va, r - 1), (vb, r - 1)] + ([(prompt_variance, clusters - 1)] if clusters > 1 else [])
        den = sum(v * v / d for v, d in parts)
        df = se2 * se2 / den if den > 0 else math.inf
        need = stdtrit(df, 1 - (1 - level) / 2) + stdtrit(df, power)
        if abs(effect) >= need * math.sqrt(se2):
            return float(r)
    return float("inf")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (Holm 1979): controls the chance of any false
    rejection among them at the nominal level. NaNs stay NaN and do not count in the family."""
    p = np.asarray(p_values, dtype=float)
    ok = np.nonzero(np.isfinite(p))[0]
    out = np.full(len(p), np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def units_for_power(effect: float, se: float, clusters: int, level: float = LEVEL, power: float = POWER
                    ) -> float:
    """How many clusters (prompts, captions) a paired two-sided test at `level` needs to detect `effect` with
    `power`, at the spread the bootstrap measured: the effect's standard error shrinks as 1/sqrt(n), so
    n = clusters x ((z_(1-a/2) + z_power) x se / |effect|)^2. inf when the effect is 0."""
    if not (np.isfinite(effect) and np.isfinite(se)) or clusters <= 0:
        return float("nan")
    if effect == 0:
        return float("inf")
    z = norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)
    return float(clusters * (z * se / abs(effect)) ** 2)
