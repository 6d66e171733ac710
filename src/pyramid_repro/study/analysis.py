"""Statistics of a user study: win / tie / loss rates, Bradley-Terry scores and rater agreement.

The paper's user study (Sec. 5, its user-study figure) reports, per question and per compared model, how often
raters preferred Pyramid Flow, found both alike, or preferred the other model. Here:

* **Rates.** For each question and each pair of models (a, b) in the study's order, the share of first showings
  (repeats left out) where a won, tied or lost.
* **Intervals.** 95% percentile intervals from a crossed (two-way, "pigeonhole") cluster bootstrap: each resample
  draws raters with replacement and, independently, prompts with replacement, and weights every vote by
  (times its rater was drawn) x (times its prompt was drawn) (Owen 2007). Votes of one rater share that rater's
  taste and votes on one prompt share its difficulty, so both are sampling units; resampling only votes would
  give intervals that are too narrow. The crossed bootstrap overcounts the vote-level noise, so its interval is
  narrowed by the variance ratio of `crossed_interval` (never widened). Vectorised: weight matrices
  (resamples x votes) serve every statistic.
* **Bradley-Terry.** With more than two models, one strength per model and question from every pairwise vote
  (P(i beats j) = p_i / (p_i + p_j)), fitted by Hunter's (2004) MM iterations for all resamples at once. A tie
  counts as half a win for each side, and each compared pair gets a pseudo-count of half a win in each direction
  so a model that wins every vote keeps a finite score. Scores are log-strengths centred to mean 0.
* **Agreement.** Per rater, how often the answer to a repeated comparison (shown again, sides swapped) matches
  the first answer; across raters, Fleiss' kappa over the comparisons judged by two or more raters (variable
  number of raters per comparison) and the mean pairwise agreement it is built from.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from pyramid_repro.eval.uncertainty import LEVEL, N_RESAMPLES, interval_from
from pyramid_repro.study.db import QUESTIONS

OUTCOMES = ("win", "tie", "loss")


@dataclass
class Votes:
    """First-showing votes as arrays: the pair's models (a before b in the study's order), a's outcome per
    question (1 win, 0.5 tie, 0 loss), rater and prompt indices."""

    models: list[str]
    a: np.ndarray
    b: np.ndarray
    score: dict[str, np.ndarray]
    rater: np.ndarray
    prompt: np.ndarray
    n_raters: int
    n_prompts: int


def _oriented(row: dict[str, Any], order: dict[str, int]) -> tuple[int, int, dict[str, float]]:
    """(a, b, {question: a's score}) of one vote: answers A / B / same mapped through the left/right sides."""
    left, right = order[row["left_model"]], order[row["right_model"]]
    a, b = min(left, right), max(left, right)
    out = {}
    for q in QUESTIONS:
        ans = row[q]
        if ans == "same":
            out[q] = 0.5
        else:
            winner = left if ans == "A" else right
            out[q] = 1.0 if winner == a else 0.0
    return a, b, out


def to_votes(rows: list[dict[str, Any]], models: list[str]) -> Votes:
    """The first showings of `rows` (db.votes_table) as arrays."""
    order = {m: i for i, m in enumerate(models)}
    first = [r for r in rows if r["repeat_of"] is None]
    raters = {r: i for i, r in enumerate(sorted({r["rater"] for r in first}))}
    prompts = {p: i for i, p in enumerate(sorted({r["prompt_id"] for r in first}))}
    oriented = [_oriented(r, order) for r in first]
    return Votes(models,
                 np.array([o[0] for o in oriented], dtype=int), np.array([o[1] for o in oriented], dtype=int),
                 {q: np.array([o[2][q] for o in oriented], dtype=float) for q in QUESTIONS},
                 np.array([raters[r["rater"]] for r in first], dtype=int),
                 np.array([prompts[r["prompt_id"]] for r in first], dtype=int), len(raters), len(prompts))


def crossed_weights(rater: np.ndarray, prompt: np.ndarray, n_raters: int, n_prompts: int,
                    n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """(n_resamples, votes) bootstrap weights. "rp": the crossed bootstrap, raters and prompts drawn with
    replacement independently, a vote counting (draws of its rater) x (draws of its prompt) times; "r" and "p":
    the same rater (prompt) draws alone; "iid": votes drawn one by one. The last three only size the crossed
    bootstrap's variance (`crossed_interval`)."""
    rng = np.random.default_rng(seed)

    def counts(n: int) -> np.ndarray:
        draws = rng.integers(0, n, size=(n_resamples, n))
        c = np.zeros((n_resamples, n))
        np.add.at(c, (np.repeat(np.arange(n_resamples), n), draws.ravel()), 1.0)
        return c

    r, p = counts(n_raters)[:, rater], counts(n_prompts)[:, prompt]
    return {"rp": r * p, "r": r, "p": p, "iid": counts(len(rater))}


def crossed_interval(estimate: float, draws: dict[str, np.ndarray], level: float = LEVEL,
                     clusters: tuple[int, int] | None = None) -> tuple[float, float]:
    """Percentile interval of the crossed bootstrap draws, narrowed by sqrt(target / var(crossed)) (never widened).

    The crossed bootstrap counts the vote-level noise about three times (Owen 2007): var(crossed) ~ s_r^2/R +
    s_p^2/P + 3 s_e^2/(RP) where the statistic's sampling variance is s_r^2/R + s_p^2/P + s_e^2/(RP), so with
    binary votes, where that noise dominates, its intervals are up to 1.7x too wide. The one-way bootstraps give
    var(r) ~ (s_r^2 + s_e^2/P)/R, var(p) ~ (s_p^2 + s_e^2/R)/P and var(iid) ~ (s_r^2 + s_p^2 + s_e^2)/(RP), so
    target = var(r) + var(p) - var(iid) estimates the sampling variance (floored at max(var(r), var(p)), which
    also covers a study with one rater or one prompt). `clusters` = (raters, prompts) scales var(r) and var(p) by
    n / (n - 1), the bootstrap's bias with few clusters."""
    def var(x: np.ndarray) -> float:
        x = x[np.isfinite(x)]
        return float(x.var()) if len(x) > 1 else 0.0

    lo, hi = interval_from(estimate, draws["rp"], level)
    v = {k: var(d) for k, d in draws.items()}
    if not np.isfinite(lo) or v["rp"] <= 0:
        return lo, hi
    if clusters is not None:  # the bootstrap's own small-sample bias of a variance: (n - 1) / n
        n_r, n_p = clusters
        v["r"] *= n_r / max(n_r - 1, 1)
        v["p"] *= n_p / max(n_p - 1, 1)
    target = max(v["r"] + v["p"] - v["iid"], v["r"], v["p"])
    f = float(np.sqrt(min(1.0, target / v["rp"])))
    return estimate + f * (lo - estimate), estimate + f * (hi - estimate)


def _weighted_mean(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    tot = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (w @ x) / np.where(tot > 0, tot, 1), np.nan)


def pairwise_rates(v: Votes, weights: dict[str, np.ndarray], level: float = LEVEL) -> pd.DataFrame:
    """Win / tie / loss rate of model a against model b per question, with bootstrap intervals."""
    rows = []
    for a, b in combinations(range(len(v.models)), 2):
        m = (v.a == a) & (v.b == b)
        if not m.any():
            continue
        for q in QUESTIONS:
            s = v.score[q][m]
            ind = {"win": (s == 1.0).astype(float), "tie": (s == 0.5).astype(float), "loss": (s == 0.0).astype(float)}
            row: dict[str, Any] = {"question": q, "model_a": v.models[a], "model_b": v.models[b],
                                   "votes": int(m.sum()), "raters": len(set(v.rater[m])),
                                   "prompts": len(set(v.prompt[m]))}
            for k, x in ind.items():
                est = float(x.mean())
                lo, hi = crossed_interval(est, {k: _weighted_mean(w[:, m], x) for k, w in weights.items()}, level,
                                          (len(set(v.rater[m])), len(set(v.prompt[m]))))
                row.update({k: est, f"{k}_lo": lo, f"{k}_hi": hi})
            rows.append(row)
    return pd.DataFrame(rows)


def bradley_terry(wins: np.ndarray, iters: int = 2000, tol: float = 1e-10, prior: float = 0.5) -> np.ndarray:
    """Log-strengths (centred) from win matrices wins[..., i, j] = wins of i over j (ties as halves); batched over
    leading axes. `prior` wins are added in each direction of every compared pair."""
    wins = np.asarray(wins, dtype=float)
    n = wins + np.swapaxes(wins, -1, -2)
    wins = wins + prior * (n > 0)
    n = wins + np.swapaxes(wins, -1, -2)
    total = wins.sum(axis=-1)
    p = np.ones(wins.shape[:-1])
    for _ in range(iters):
        denom = (n / (p[..., :, None] + p[..., None, :])).sum(axis=-1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1), p)
        new = new / np.exp(np.log(np.maximum(new, 1e-300)).mean(axis=-1, keepdims=True))
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    logp = np.log(np.maximum(p, 1e-300))
    return logp - logp.mean(axis=-1, keepdims=True)


def bt_scores(v: Votes, weights: dict[str, np.ndarray], level: float = LEVEL) -> pd.DataFrame:
    """Bradley-Terry score per model and question with bootstrap intervals (only for more than two models)."""
    k = len(v.models)
    if k <= 2:
        return pd.DataFrame(columns=["question", "model", "score", "score_lo", "score_hi", "rank"])
    rows = []
    for q in QUESTIONS:
        s = v.score[q]
        full = np.zeros((k, k))
        boot = {name: np.zeros((w.shape[0], k, k)) for name, w in weights.items()}
        for a, b in combinations(range(k), 2):
            m = (v.a == a) & (v.b == b)
            full[a, b], full[b, a] = s[m].sum(), (1 - s[m]).sum()
            for name, w in weights.items():
                boot[name][:, a, b], boot[name][:, b, a] = w[:, m] @ s[m], w[:, m] @ (1 - s[m])
        est = bradley_terry(full)
        draws = {name: bradley_terry(x) for name, x in boot.items()}
        ranks = 1 + (est[None, :] > est[:, None] + 1e-9).sum(axis=1)  # tied scores share the better rank
        for i, model in enumerate(v.models):
            lo, hi = crossed_interval(float(est[i]), {name: d[:, i] for name, d in draws.items()}, level,
                                      (v.n_raters, v.n_prompts))
            rows.append({"question": q, "model": model, "score": float(est[i]), "score_lo": lo, "score_hi": hi,
                         "rank": int(ranks[i])})
    return pd.DataFrame(rows)


def repeat_agreement(rows: list[dict[str, Any]], models: list[str]) -> pd.DataFrame:
    """Per rater and question: the share of repeated comparisons answered as the first time (in model terms,
    so a swapped side does not count as a change)."""
    order = {m: i for i, m in enumerate(models)}
    by_assignment = {r["assignment"]: r for r in rows}
    out = []
    for r in rows:
        first = by_assignment.get(r["repeat_of"]) if r["repeat_of"] is not None else None
        if first is None:
            continue
        _, _, s1 = _oriented(first, order)
        _, _, s2 = _oriented(r, order)
        out.append({"rater": r["rater"], **{q: float(s1[q] == s2[q]) for q in QUESTIONS}})
    if not out:
        return pd.DataFrame(columns=["rater", "repeats", *QUESTIONS])
    df = pd.DataFrame(out)
    agg = df.groupby("rater")[list(QUESTIONS)].mean()
    agg.insert(0, "repeats", df.groupby("rater").size())
    return agg.reset_index()


def fleiss_kappa(counts: np.ndarray) -> tuple[float, float]:
    """(kappa, mean pairwise agreement) of an (items, categories) count matrix; items may have different numbers
    of raters (each at least two)."""
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=1)
    keep = n >= 2
    counts, n = counts[keep], n[keep]
    if len(n) == 0:
        return float("nan"), float("nan")
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (n * (n - 1))
    p_bar = float(p_item.mean())
    p_cat = counts.sum(axis=0) / counts.sum()
    p_e = float((p_cat**2).sum())
    kappa = (p_bar - p_e) / (1 - p_e) if p_e < 1 else float("nan")
    return float(kappa), p_bar


def rater_agreement(v: Votes) -> pd.DataFrame:
    """Fleiss' kappa and pairwise agreement per question over comparisons (model pair, prompt) judged by at
    least two raters; categories: a better, same, b better."""
    rows = []
    item = v.a * (len(v.models) ** 2) * max(v.n_prompts, 1) + v.b * max(v.n_prompts, 1) + v.prompt
    _, inv = np.unique(item, return_inverse=True)
    for q in QUESTIONS:
        cat = np.searchsorted([0.0, 0.5, 1.0], v.score[q])
        counts = np.zeros((inv.max() + 1 if len(inv) else 0, 3))
        np.add.at(counts, (inv, cat), 1)
        kappa, agree = fleiss_kappa(counts)
        rows.append({"question": q, "fleiss_kappa": kappa, "pairwise_agreement": agree,
                     "items": int((counts.sum(axis=1) >= 2).sum())})
    return pd.DataFrame(rows)


@dataclass
class StudyAnalysis:
    pairwise: pd.DataFrame
    bradley_terry: pd.DataFrame
    repeat_agreement: pd.DataFrame
    rater_agreement: pd.DataFrame
    n_votes: int
    n_first: int
    n_raters: int
    n_prompts: int
    n_resamples: int


def analyse(rows: list[dict[str, Any]], models: list[str], n_resamples: int = N_RESAMPLES, seed: int = 0,
            level: float = LEVEL) -> StudyAnalysis:
    """Every statistic of the report from the study's votes (db.votes_table) and its models' order."""
    if not rows:
        raise ValueError("the study has no votes yet")
    v = to_votes(rows, models)
    w = crossed_weights(v.rater, v.prompt, v.n_raters, v.n_prompts, n_resamples, seed)
    return StudyAnalysis(pairwise_rates(v, w, level), bt_scores(v, w, level), repeat_agreement(rows, models),
                         rater_agreement(v), len(rows), len(v.a), v.n_raters, v.n_prompts, n_resamples)
