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

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

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


def interval_from(estimate: float, resampled: np.ndarray, level: float = LEVEL, method: str = "percentile"
                  ) -> tuple[float, float]:
    """(lo, hi) from a statistic's resampled values (NaNs, e.g. a resample without any video of a dimension,
    dropped)."""
    if method not in METHODS:
        raise ValueError(f"bootstrap method {method!r}; expected one of {METHODS}")
    values = np.asarray(resampled, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2
    q_lo, q_hi = np.quantile(values, [a, 1 - a])
    if method == "basic":
        return float(2 * estimate - q_hi), float(2 * estimate - q_lo)
    return float(q_lo), float(q_hi)


def bootstrap(statistic: Callable[[np.ndarray], dict[str, float | None]], clusters: Sequence[Any],
              n_resamples: int = N_RESAMPLES, level: float = LEVEL, method: str = "percentile", seed: int = 0
              ) -> dict[str, list[float]]:
    """Intervals of every number `statistic(indices)` returns ({name: value}; indices select units, with
    repeats). Returns {name: [lo, hi]} at `level`, for the names whose full-sample value is a number."""
    everything = np.arange(len(clusters))
    estimate = statistic(everything)
    names = [k for k, v in estimate.items() if v is not None and np.isfinite(v)]
    draws: dict[str, list[float]] = {k: [] for k in names}
    for idx in resample_indices(clusters, n_resamples, seed):
        values = statistic(idx)
        for k in names:
            v = values.get(k)
            draws[k].append(float("nan") if v is None else float(v))
    return {k: list(interval_from(float(estimate[k]), np.array(draws[k]), level, method)) for k in names}


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
