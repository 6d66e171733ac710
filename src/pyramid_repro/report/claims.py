"""The claims report: each claim of the paper that the profile's experiments can test, decided by a paired test
(docs/method.md §11) -> reports/claims.{pdf,csv,md}.

The claims are data (replication/claims.yaml): the paper's words, the experiments compared and the statistics that
fit the claim. Every experiment samples the same prompts with the same seeds and scores its FID points on the same
captions with the same noise, so two experiments are compared on shared units: prompts (the videos of a prompt,
seed by seed) or captions (one generated image per caption at every FID point). `eval.uncertainty.
paired_difference` resamples the shared units jointly and swaps their labels for the p-value; the p-values of one
claim's rows are Holm-adjusted together. A verdict is

* ``supported``: the paired interval lies on the side the paper predicts and the adjusted p-value is below 0.05;
* ``contradicted``: the interval lies on the other side (adjusted p below 0.05);
* ``undecided``: neither; the row then says how many prompts (captions) a paired test would need for 80% power at
  the effect and spread measured (`uncertainty.units_for_power`);
* ``measured, no verdict``: the paper states no effect to test (history corruption);
* ``not run by this profile``: an arm is not among the profile's experiments; the row gives the command that runs it.

A claim that states a size (`paper:` in claims.yaml, "about 3x", "more than 85%") gets a second verdict on the
row that measures it, in `size_verdict` (`size_verdict`): "3x consistent" when the interval contains the stated
number, "3x excluded" when not (or, for `size_test: above`, when the interval does not lie above it); the tables
print both, "supported in direction; 3x excluded (1.78x [1.48, 2.55])". A censored speed-up (the baseline never
reaches the target) states its censored share and gives no power number (`censored_interval`, docs/method.md §11).

Every verdict carries its scope (column ``scope``): with one training run per experiment (train.seeds 1) it is
about that run ("for this training run"), and the row says how many runs per arm a test across runs would need
(``seeds_needed``, from the seed variance of any extra runs on disk); with train.seeds >= 2 the runs and the prompts
are resampled together and the test is at the level of the method (`compare_arms`, docs/method.md §11).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pyramid_repro.config import Config, ConfigError, load_config, load_yaml, replication_dir
from pyramid_repro.eval import uncertainty as uq
from pyramid_repro.eval import vbench as vb
from pyramid_repro.eval.backends import FrechetToFixed, direction_hits, real_probe_stats, travel_score
from pyramid_repro.eval.score import UNIT_INDEX, read_units
from pyramid_repro.experiments import experiments, selected_experiments
from pyramid_repro.flow.cost import token_report
from pyramid_repro.layout import run_name, units_path
from pyramid_repro.report.audit import ledger_summary
from pyramid_repro.report.convergence import convergence_speedup, smooth
from pyramid_repro.report.style import _plt, footer

ALPHA = 0.05
KINDS = ("fid_speedup", "motion", "blockiness", "dimension", "tokens")
SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "undecided"
NO_VERDICT, NOT_RUN = "measured, no verdict", "not run by this profile"
SIZE_CONSISTENT, SIZE_EXCLUDED = "consistent", "excluded"
SIZE_TESTS = ("about", "above")  # docs/method.md §11: the stated size inside the interval / the interval above it
COLUMNS = ["claim_id", "claim", "where", "arm_a", "arm_b", "statistic", "unit", "n", "estimate", "lo", "hi", "se",
           "p_value", "p_holm", "verdict", "size_verdict", "scope", "needed_for_power", "seeds_needed", "paper",
           "display", "method", "note"]


@dataclass(frozen=True)
class Claim:
    """One claim of replication/claims.yaml."""

    id: str
    claim: str
    where: str
    kind: str
    comparisons: list[tuple[str, str]]
    statistics: list[str]
    direction: int
    stage: str | None = None
    axis: str = "flops"
    paper: float | None = None
    size_test: str = "about"
    also_axis: str | None = None


def load_claims(path: Path | None = None) -> list[Claim]:
    """The claims of replication/claims.yaml, checked: a bad entry is a ConfigError naming the file, the claim
    and the field."""
    path = Path(path or replication_dir() / "claims.yaml")
    raw = load_yaml(path.read_text()) or {}
    known = set(experiments())
    out = []
    for cid, c in raw.items():
        where = f"{path}: claim {cid!r}"
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: expected a mapping of claim fields")
        missing = {"claim", "where", "kind", "comparisons", "statistics", "direction"} - set(c)
        if missing:
            raise ConfigError(f"{where}: missing field(s) {sorted(missing)}")
        if c["kind"] not in KINDS:
            raise ConfigError(f"{where}: kind {c['kind']!r}; expected one of {KINDS}")
        pairs = []
        for pair in c["comparisons"]:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ConfigError(f"{where}: comparisons entry {pair!r}; expected [arm A, arm B]")
            bad = [e for e in pair if e not in known]
            if bad:
                raise ConfigError(f"{where}: comparisons name unknown experiment(s) {bad} (replication/"
                                  "experiments.yaml)")
            pairs.append((pair[0], pair[1]))
        if c["direction"] not in (-1, 0, 1):
            raise ConfigError(f"{where}: direction {c['direction']!r}; expected 1, -1 or 0 (no stated effect)")
        if c["kind"] == "fid_speedup" and not c.get("stage"):
            raise ConfigError(f"{where}: a fid_speedup claim names the curriculum `stage` whose FID curve it reads")
        if c.get("size_test", "about") not in SIZE_TESTS:
            raise ConfigError(f"{where}: size_test {c['size_test']!r}; expected one of {SIZE_TESTS}")
        if c.get("paper") is not None and not isinstance(c["paper"], (int, float)):
            raise ConfigError(f"{where}: paper {c['paper']!r}; expected the paper's number (e.g. 3.0 for 'about 3x')")
        out.append(Claim(id=cid, claim=c["claim"], where=c["where"], kind=c["kind"], comparisons=pairs,
                         statistics=list(c["statistics"]), direction=int(c["direction"]), stage=c.get("stage"),
                         axis=c.get("axis", "flops"), paper=c.get("paper"), size_test=c.get("size_test", "about"),
                         also_axis=c.get("also_axis")))
    return out


def decide(interval: tuple[float, float], p_holm: float, direction: int, alpha: float = ALPHA) -> str:
    """The verdict of one paired comparison: the interval on the predicted side of 0 (direction +1: above) and the
    Holm-adjusted permutation p-value below `alpha` -> supported; on the other side -> contradicted; else
    undecided. direction 0 (no stated effect) -> no verdict."""
    if direction == 0:
        return NO_VERDICT
    lo, hi = (direction * v for v in interval)
    lo, hi = min(lo, hi), max(lo, hi)
    if not (np.isfinite(p_holm) and p_holm < alpha):
        return UNDECIDED
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return CONTRADICTED
    return UNDECIDED


def size_verdict(interval: tuple[float, float], stated: float, test: str = "about") -> str:
    """The size half of a claim's verdict (docs/method.md §11), on the scale the paper states its number in (a
    speed-up factor, a percentage). "about" (e.g. "about 3x"): consistent when the paired interval contains the
    stated number, excluded when it lies wholly above or below it; no tolerance band is added, the paper gives
    none. "above" (e.g. "more than 85%"): consistent when the interval lies above the number, excluded when it lies
    at or below it, undecided when it straddles it. An interval with an undefined end is undecided."""
    if test not in SIZE_TESTS:
        raise ValueError(f"size test {test!r}; expected one of {SIZE_TESTS}")
    lo, hi = interval
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return UNDECIDED
    lo, hi = min(lo, hi), max(lo, hi)
    if test == "about":
        return SIZE_CONSISTENT if lo <= stated <= hi else SIZE_EXCLUDED
    return SIZE_CONSISTENT if lo > stated else SIZE_EXCLUDED if hi <= stated else UNDECIDED


def size_label(c: Claim, unit: str) -> str:
    """The paper's stated size as the size verdict names it: '3x' (about), '>85%' (above)."""
    return f"{'>' if c.size_test == 'above' else ''}{c.paper:g}{unit}"


def verdict_text(verdict: Any, size: Any) -> str:
    """A row's verdict as the tables print it: the direction verdict alone, or with a size verdict
    'supported in direction; 3x excluded (1.78x [1.48, 2.55])'."""
    verdict, size = _s(verdict), _s(size)
    return f"{verdict} in direction; {size}" if size else verdict


# -- per-video units (prompts) ------------------------------------------------------------------------------------
def experiment_units(cfg: Config, experiment: str, backend: str = "synthetic", run: int = 0
                     ) -> dict[str, np.ndarray] | None:
    """The per-video units of an experiment's metrics (metrics/<backend>.units.npz) of training run `run`
    (train.seeds; 0 = the experiment's own folder), None when its scoring run predates them."""
    path = units_path(cfg.layout.for_run(run).metrics(experiment, backend))
    return read_units(path) if path.is_file() else None


def video_values(units: dict[str, np.ndarray], statistic: str) -> np.ndarray:
    """Per-video values of a per-video statistic (NaN where the video's prompt does not serve it): the prompted
    motion's `direction_accuracy` and `travel_score` (eval/backends.py, from the units' `motion_ratio`), a
    dimension (`dim/<statistic>`) or any other per-video array the backend saved under that name (e.g. the
    synthetic proxy's `jump_blockiness`)."""
    if statistic == "direction_accuracy":
        return direction_hits(units["motion_ratio"])
    if statistic == "travel_score":
        return travel_score(units["motion_ratio"])
    for key in (f"dim/{statistic}", statistic):
        if key in units and key not in UNIT_INDEX:
            return np.asarray(units[key], dtype=float)
    raise KeyError(f"the units have no per-video {statistic!r} (have {sorted(set(units) - set(UNIT_INDEX))}); "
                   "rescore the experiment if its units predate the statistic")


def per_video_statistics(units: dict[str, np.ndarray]) -> list[str]:
    """The names `video_values` reads in a units file: every array with one number per video besides the index of
    the videos (eval/score.py UNIT_INDEX), a dimension's without its `dim/` prefix (an FID backend's per-frame
    features have none)."""
    n = len(units["prompt_id"])
    per_video = [k for k, v in units.items() if v.ndim == 1 and len(v) == n and v.dtype.kind in "fiub"]
    return sorted(k.removeprefix("dim/") for k in per_video if k not in UNIT_INDEX and k != "frame_video")


def _paired_order(ua: dict[str, np.ndarray], ub: dict[str, np.ndarray], a: str, b: str) -> tuple[np.ndarray, ...]:
    """Index arrays putting both arms' videos in one (prompt, sample) order; a ValueError when they are not the same
    prompts and samples (not a paired design)."""
    ka = list(zip(ua["prompt_id"].tolist(), ua["sample"].tolist()))
    kb = list(zip(ub["prompt_id"].tolist(), ub["sample"].tolist()))
    if sorted(ka) != sorted(kb):
        raise ValueError(f"{a} and {b} were not sampled on the same prompts and samples: cannot pair them")
    oa = sorted(range(len(ka)), key=ka.__getitem__)
    ob = sorted(range(len(kb)), key=kb.__getitem__)
    return np.array(oa), np.array(ob)


Units = dict[str, np.ndarray]


def _run_orders(ua: Units | list[Units], ub: Units | list[Units], a: str, b: str
                ) -> tuple[list[Units], list[Units], list[np.ndarray], list[np.ndarray]]:
    """Each arm's training runs (one units dict, or a list of them: train.seeds) with the index arrays that put
    every run's videos in one (prompt, sample) order; a ValueError when a run has other prompts or samples."""
    runs_a, runs_b = (list(u) if isinstance(u, list) else [u] for u in (ua, ub))
    names = [f"{a} run {k}" for k in range(len(runs_a))] + [f"{b} run {k}" for k in range(len(runs_b))]
    orders = [_paired_order(runs_a[0], u, names[0], name) for u, name in zip(runs_a + runs_b, names)]
    return runs_a, runs_b, [o for _, o in orders[:len(runs_a)]], [o for _, o in orders[len(runs_a):]]


def paired_video_statistic(ua: Units | list[Units], ub: Units | list[Units], statistic: str, a: str = "A",
                           b: str = "B", seed: int = 0) -> uq.Paired:
    """Paired comparison of a per-video statistic between two arms (effect: mean A - mean B over the videos whose
    prompt serves it), prompts resampled jointly; `total` is VBench's Total aggregate of every dimension's mean.
    An arm given as a list of units (one per training run, train.seeds) is compared across its runs
    (`compare_arms`); its videos are pooled over the runs."""
    runs_a, runs_b, oas, obs = _run_orders(ua, ub, a, b)
    ua, oa = runs_a[0], oas[0]
    if statistic == "total":
        dims = sorted(k for k in ua if k.startswith("dim/"))
        pool = {d: np.concatenate([u[d][o] for u, o in zip(runs_a + runs_b, oas + obs)]) for d in dims}

        def effect(ia: np.ndarray, ib: np.ndarray) -> float:
            def total(idx: np.ndarray) -> float:
                means = {d[4:]: float(np.nanmean(pool[d][idx])) for d in dims if np.isfinite(pool[d][idx]).any()}
                return vb.aggregate(means)["total"] if len(means) == len(dims) else float("nan")
            return total(ia) - total(ib)

        keep = np.arange(len(oa))
    else:
        values = [video_values(u, statistic)[o] for u, o in zip(runs_a + runs_b, oas + obs)]
        keep = np.nonzero(np.logical_and.reduce([np.isfinite(v) for v in values]))[0]
        if not len(keep):
            raise ValueError(f"no video of {a} and {b} has a value of {statistic!r}")
        pool_v = np.concatenate([v[keep] for v in values])

        def effect(ia: np.ndarray, ib: np.ndarray) -> float:
            return float(pool_v[ia].mean() - pool_v[ib].mean())

    clusters = ua["prompt_id"][oa][keep]
    # videos i of A and B share prompt and seed: a pair, swapped on its own in the permutation test
    return compare_arms(effect, clusters, (len(runs_a), len(runs_b)), seed=seed, swap="unit")


def paired_feature_fid(ua: Units | list[Units], ub: Units | list[Units], to_real: FrechetToFixed,
                       a: str = "A", b: str = "B", seed: int = 0) -> uq.Paired:
    """Paired difference FID(A) - FID(B) of two arms' generated frames (an FID backend's units: every frame's
    features and its video), prompts resampled jointly; bias-corrected estimate with its basic interval. Arms given
    as lists of units (training runs) are compared across runs (`compare_arms`): an arm's FID is that of its runs'
    frames together."""
    runs_a, runs_b, oas, obs = _run_orders(ua, ub, a, b)
    ua, oa = runs_a[0], oas[0]
    pool = [u["features"][u["frame_video"] == i].astype(np.float64)
            for u, o in zip(runs_a + runs_b, oas + obs) for i in o]

    def effect(ia: np.ndarray, ib: np.ndarray) -> float:
        return to_real(np.concatenate([pool[i] for i in ia])) - to_real(np.concatenate([pool[i] for i in ib]))

    clusters = ua["prompt_id"][oa]
    return compare_arms(effect, clusters, (len(runs_a), len(runs_b)), method="basic", seed=seed, swap="unit")


def compare_arms(effect, clusters: np.ndarray | list, runs: tuple[int, int], method: str = "percentile",
                 seed: int = 0, swap: str = "cluster", n_permutations: int = uq.N_PERMUTATIONS) -> uq.Paired:
    """The paired comparison at the level the design allows (docs/method.md §11): one training run per arm ->
    prompts (captions) resampled jointly and the label-swap test (`uncertainty.paired_difference`), a verdict about
    these two runs; two or more -> the two-level bootstrap over runs and prompts with the run-level t test
    (`uncertainty.two_level_difference`), a verdict about the methods. `effect` indexes the units pooled run by run
    (A's runs, then B's)."""
    if tuple(runs) == (1, 1):
        return uq.paired_difference(effect, clusters, clusters, method=method, seed=seed, swap=swap,
                                    n_permutations=n_permutations)
    return uq.two_level_difference(effect, clusters, runs, method=method, seed=seed)


# -- FID curves (captions) ----------------------------------------------------------------------------------------
@dataclass
class FidArm:
    """One experiment's FID points of one stage with their per-caption features."""

    x: np.ndarray
    features: list[np.ndarray]
    units: np.ndarray
    runs: int = 1  # training runs pooled in `features` (run r's caption i at r * len(units) + i)


def fid_arm(cfg: Config, curve: pd.DataFrame | None, experiment: str, stage: str, axis: str, run: int = 0
            ) -> FidArm | str:
    """The FID points of `stage` in an experiment's fid_curve.csv (of training run `run`) with the features they
    were scored on (`units_file`), or a string saying what is missing."""
    layout = cfg.layout.for_run(run)
    if curve is None or curve.empty:
        return f"{experiment} has no FID curve ({layout.fid_curve(experiment)})"
    pts = curve[curve["stage"] == stage] if "stage" in curve.columns else curve
    if pts.empty:
        return f"{experiment}'s FID curve has no point in stage {stage!r}"
    if "units_file" not in pts.columns or pts["units_file"].isna().any():
        return (f"{experiment}'s FID points of stage {stage!r} were scored before their features were saved "
                "(no units_file): rerun its FID points to decide this claim")
    base = layout.fid_curve(experiment).parent
    feats, units = [], None
    for f in pts["units_file"]:
        path = base / str(f)
        if not path.is_file():
            return f"{path}: FID point features not found"
        with np.load(path, allow_pickle=False) as z:
            feats.append(np.asarray(z["features"], dtype=np.float64))
            u = z["units"]
        if units is not None and not np.array_equal(u, units):
            return f"{path}: its captions differ from the other points of the curve"
        units = u
    return FidArm(x=pts[axis].to_numpy(float), features=feats, units=units)


def plug_in_curves(cfg: Config, curves: dict[str, pd.DataFrame], stage: str | None
                   ) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Every experiment's FID points of `stage` with `fid` replaced by the plug-in Fréchet distance of the point's
    saved features and no bands (those are the bias-corrected FIDs' intervals): the FID every speed-up reads, so
    that fid_convergence and the claims table state one figure (docs/method.md §11). Also what could not be
    recomputed, one line per curve."""
    out, missing = {}, []
    to_real = None
    for name, curve in curves.items():
        st = stage if stage is not None or "stage" not in curve.columns else str(curve["stage"].iloc[-1])
        arm = fid_arm(cfg, curve, name, st, "samples_seen") if "samples_seen" in curve.columns else \
            f"{name}'s FID curve has no samples_seen column"
        if isinstance(arm, str):
            missing.append(arm)
            continue
        try:
            to_real = to_real or FrechetToFixed(*real_probe_stats(cfg))
        except FileNotFoundError as e:
            return {}, [str(e)]
        pts = curve[curve["stage"] == st] if "stage" in curve.columns else curve
        out[name] = pts.drop(columns=["fid_lo", "fid_hi"], errors="ignore").assign(
            fid=[to_real(f) for f in arm.features])
    return out, missing


TARGETS = {"speedup_common": "common", "speedup_pyramid_best": "pyramid_best"}


def curve_target(fid_pyramid: np.ndarray, fid_base: np.ndarray, kind: str, k: int = 3) -> float:
    """The FID a speed-up is measured at (docs/method.md §7): "common", the worse of the two curves' best smoothed
    FIDs (both reach it by construction); "pyramid_best", the pyramid's best smoothed FID (the paper's framing: how
    long the baseline needs to match the pyramid; the baseline may never get there)."""
    if kind == "common":
        return float(max(smooth(fid_pyramid, k)[-1], smooth(fid_base, k)[-1]))
    if kind == "pyramid_best":
        return float(smooth(fid_pyramid, k)[-1])
    raise ValueError(f"speed-up target {kind!r}; expected 'common' or 'pyramid_best'")


def speedup_statistic(pyr: FidArm, base: FidArm, to_real: FrechetToFixed, seed: int = 0, k: int = 3,
                      kinds: tuple[str, ...] = ("common", "pyramid_best"), cache: dict | None = None
                      ) -> dict[str, Any]:
    """Paired speed-ups of the pyramid (A) over the baseline (B) (docs/method.md §7, §11): the log of
    x_baseline / x_pyramid at the first crossing of a target FID (`curve_target`, recomputed from each resample's
    curves) on smoothed curves, captions resampled jointly (one draw serves every point of both curves) and
    swapped between the arms for the p-value. A resample in which the baseline never reaches the target is
    censored (+inf, kept by the order-statistic quantiles); when the observed baseline never reaches it the
    observed speed-up is the lower bound x_last / x_pyramid (`censored_interval` gives that case's interval).
    Also the paired difference of the last points' FIDs. FIDs are the plug-in Fréchet distances of each point's
    features, the one speed-up definition of every report (docs/method.md §11). `cache` keeps each resample's
    curves for the next call on the same features (another x axis: the same seed draws the same resamples).
    Returns {"speedup": {kind:
    {"target", "observed", "reason", "lower_bound", "paired", "interval"}}, "final_fid": Paired}."""
    if not np.array_equal(pyr.units, base.units):
        raise ValueError("the two FID curves were not scored on the same captions: cannot pair them")
    if len(pyr.features) != len(base.features):
        raise ValueError(f"the FID curves have {len(pyr.features)} and {len(base.features)} points in the stage; "
                         "pairing needs equal numbers (fid_points)")
    pooled = [np.concatenate([fa, fb]) for fa, fb in zip(pyr.features, base.features)]
    fid_a = np.array([to_real(f) for f in pyr.features])
    fid_b = np.array([to_real(f) for f in base.features])
    clusters = [str(u) for u in pyr.units]
    runs = (pyr.runs, base.runs)

    def log_speedup(fa: np.ndarray, fb: np.ndarray, kind: str) -> tuple[float, dict]:
        r = convergence_speedup(base.x, fb, pyr.x, fa, curve_target(fa, fb, kind, k), k)
        reason = r["reason"]
        if r["speedup"] is not None:
            return math.log(r["speedup"]), r
        if reason == "not reached by baseline":
            return math.inf, r
        if reason == "not reached by pyramid":
            return -math.inf, r
        return math.nan, r  # not identified (both at the target from their first evaluation)

    memo = {} if cache is None else cache

    def curves(ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (ia.tobytes(), ib.tobytes())
        if key not in memo:
            memo[key] = (np.array([to_real(p[ia]) for p in pooled]), np.array([to_real(p[ib]) for p in pooled]))
        return memo[key]

    def log_bound(ia: np.ndarray, ib: np.ndarray, kind: str) -> float:
        value, r = log_speedup(*curves(ia, ib), kind)
        return math.log(r["lower_bound"]) if value == math.inf else value

    speedups = {}
    for kind in kinds:
        observed, r = log_speedup(fid_a, fid_b, kind)
        paired = compare_arms(lambda ia, ib, kind=kind: log_speedup(*curves(ia, ib), kind)[0], clusters, runs,
                              n_permutations=1000, seed=seed)
        lb = r["lower_bound"] if r["reason"] == "not reached by baseline" else None
        interval = censored_interval(paired, lb, lambda kind=kind: uq.paired_difference(
            lambda ia, ib: log_bound(ia, ib, kind), clusters, clusters, n_permutations=0, seed=seed).interval)
        speedups[kind] = {"target": r["target"], "observed": observed, "reason": r["reason"], "lower_bound": lb,
                          "paired": paired, "interval": interval}

    def final(ia: np.ndarray, ib: np.ndarray) -> float:
        return to_real(pooled[-1][ia]) - to_real(pooled[-1][ib])

    final_fid = compare_arms(final, clusters, runs, method="basic", seed=seed)
    return {"speedup": speedups, "final_fid": final_fid}


def censored_interval(paired: uq.Paired, lower_bound: float | None,
                      bounded: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """The interval of a log speed-up some of whose resamples are censored (docs/method.md §11). As long as the
    lower end is finite and the observed speed-up is not itself censored, the order-statistic interval stands (its
    censored resamples sit at the top, an upper end of +inf says so). Otherwise a censored resample is known only
    to be at least its own bound x_last / x_pyramid: `bounded()` gives the interval with each censored resample
    counted as that bound, whose lower end is kept (conservative, and never above the observed bound, so the
    estimate lies inside its interval) with an open upper end. This replaces the [inf, inf] that 998 censored
    resamples of 1000 once gave, which excluded the row's own estimate."""
    lo, hi = paired.interval
    if lower_bound is None and lo != math.inf:
        return lo, hi
    observed = math.log(lower_bound) if lower_bound is not None else paired.estimate
    low = bounded()[0]
    return float(min(low, observed) if math.isfinite(observed) else low), math.inf


# -- training runs as a level of the design (train.seeds; docs/method.md §11) -------------------------------------
SCOPE_RUN = "for this training run"
SCOPE_ANALYTIC = "paper-scale arithmetic (no training run)"
SEEDS_FOR_COMMAND = 3  # the runs per arm the command in a one-seed row's note asks for


def scope_of(runs: int) -> str:
    """What a verdict measured on `runs` training runs per arm is about."""
    return SCOPE_RUN if runs == 1 else f"across {runs} training runs per arm"


def arm_units(cfg: Config, experiment: str, runs: int, backend: str = "synthetic") -> Units | list[Units] | str:
    """An arm's per-video units: run 0's (one run) or every run's (a list), or the run name of the first run whose
    units are missing."""
    units = []
    for k in range(runs):
        u = experiment_units(cfg, experiment, backend, k)
        if u is None:
            return run_name(experiment, k)
        units.append(u)
    return units[0] if runs == 1 else units


def arm_fid_runs(cfg: Config, curves: dict[str, pd.DataFrame], experiment: str, stage: str, axis: str,
                 runs: int) -> FidArm | str:
    """An arm's FID points of `stage` over `runs` training runs: run 0's curve (the report's input) and, for the
    runs k >= 1, their fid_curve.csv; the runs' features pooled point by point (FidArm.runs), or a string saying what
    is missing. Every run must have the same points (x) and captions."""
    arms = []
    for k in range(runs):
        path = cfg.layout.for_run(k).fid_curve(experiment)
        curve = curves.get(experiment) if k == 0 else (pd.read_csv(path) if path.is_file() else None)
        arm = fid_arm(cfg, curve, experiment, stage, axis, k)
        if isinstance(arm, str):
            return arm
        if arms and not (np.array_equal(arm.units, arms[0].units) and len(arm.features) == len(arms[0].features)):
            return f"{run_name(experiment, k)}'s FID points differ from run 0's in number or captions"
        arms.append(arm)
    if runs == 1:
        return arms[0]
    return FidArm(x=arms[0].x, features=[np.concatenate([a.features[i] for a in arms])
                                         for i in range(len(arms[0].features))], units=arms[0].units, runs=runs)


def runs_on_disk(cfg: Config, c: Claim, a: str, b: str, limit: int = 100) -> int:
    """How many training runs of both arms a claim could read (run 0 and the seed_<k> runs of an earlier
    multi-seed run in the same results): the seed variance a one-seed report can borrow."""
    k = 1
    while k < limit:
        layout = cfg.layout.for_run(k)
        files = ([layout.fid_curve(e) for e in (a, b)] if c.kind == "fid_speedup" else
                 [units_path(layout.metrics(e, "synthetic")) for e in (a, b)])
        if not all(f.is_file() for f in files):
            break
        k += 1
    return k


def seeds_command(cfg: Config, seeds: int = SEEDS_FOR_COMMAND) -> str:
    """The command that decides the claims across `seeds` training runs per arm (README: the multi-seed run)."""
    target = cfg.layout.for_run(0).reports / f"seeds_{seeds}" / "claims.pdf"
    prof = "" if cfg.profile == load_config(None).profile else f"profile={cfg.profile} "
    return f"snakemake --cores all --config {prof}train_seeds={seeds} -- {target}"


def add_scope(cfg: Config, c: Claim, rows: list[dict], curves: dict[str, pd.DataFrame]) -> None:
    """Label every row of one claim with its scope and, for each tested row, the training runs per arm an 80%-power
    test across runs would need (`uncertainty.runs_for_power`): from the row's own run variances when the report
    has several runs, else from the runs of an earlier multi-seed run on disk, else a note that one run cannot
    tell (its seed variance is unmeasured) with the command that measures it."""
    runs = cfg.train.seeds
    borrowed: dict[tuple[str, str], dict[str, uq.Paired] | None] = {}
    for r in rows:
        paired: uq.Paired | None = r.pop("_paired", None)
        if r["verdict"] == NOT_RUN:
            r["scope"] = "not run"
            continue
        r["scope"] = (SCOPE_ANALYTIC if r["unit"] == "arithmetic" else
                      "for training run 0 (its ledger)" if r["unit"] == "ledger" and runs > 1 else scope_of(runs))
        if paired is None or r["estimate"] is None or not np.isfinite(r["estimate"]):
            continue
        source, where = paired, "this report's runs"
        if runs == 1:
            key = (r["arm_a"], r["arm_b"])
            if key not in borrowed:
                borrowed[key] = _seed_variance(cfg, c, *key, curves)
            found = borrowed[key]
            source = (found or {}).get(r["statistic"])
            if source is None:
                r["note"] = _join(r["note"], "seeds needed: not estimable from one training run (the seed variance "
                                  f"is unmeasured); measure it with {seeds_command(cfg)}")
                continue
            where = f"the seed variance of {source.runs[0]} runs per arm on disk"
        if source.run_variance is None:
            continue
        r["seeds_needed"] = uq.runs_for_power(r["estimate"], source.run_variance, source.prompt_variance or 0.0,
                                              source.clusters)
        r["note"] = _join(r["note"], f"seeds needed for 80% power: from {where}")


def _seed_variance(cfg: Config, c: Claim, a: str, b: str, curves: dict[str, pd.DataFrame]
                   ) -> dict[str, uq.Paired] | None:
    """The comparison across every run of both arms on disk (two or more), by statistic; None when there is only
    run 0 or the runs cannot be compared."""
    found = runs_on_disk(cfg, c, a, b)
    if found < 2:
        return None
    try:
        rows = _measure(cfg, c, a, b, curves, found)
    except (ValueError, KeyError, FileNotFoundError):
        return None
    return {r["statistic"]: r["_paired"] for r in rows if r.get("_paired") is not None}


def _join(note: str | None, more: str) -> str:
    return f"{note}; {more}" if note else more


# -- the report ---------------------------------------------------------------------------------------------------
def _row(c: Claim, a: str, b: str, statistic: str, unit: str, **kw: Any) -> dict[str, Any]:
    base = {k: None for k in COLUMNS}
    return base | {"claim_id": c.id, "claim": c.claim, "where": c.where, "arm_a": a, "arm_b": b,
                   "statistic": statistic, "unit": unit, "paper": c.paper} | kw


def _from_paired(row: dict, p: uq.Paired) -> dict:
    # _paired: the comparison itself, for the seeds-needed arithmetic (`add_scope`; not a column)
    return row | {"n": p.clusters, "estimate": p.estimate, "lo": p.interval[0], "hi": p.interval[1],
                  "p_value": p.p_value, "method": p.to_dict()["method"], "se": p.se, "_paired": p}


def run_command(cfg: Config, missing: list[str]) -> str:
    """The command that adds `missing` experiments to the profile's run and renders the claims again."""
    run = selected_experiments(cfg.experiments)
    chosen = run + [e for e in missing if e not in run]
    target = cfg.layout.report("claims.pdf")
    prof = "" if cfg.profile == load_config(None).profile else f"profile={cfg.profile} "
    return f"snakemake --cores all --config {prof}'experiments=[{','.join(chosen)}]' -- {target}"


def claims_frame(cfg: Config, curves: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per claim, comparison and statistic (COLUMNS), the verdicts decided (module docstring)."""
    run = set(selected_experiments(cfg.experiments))
    curves = curves or {}
    rows: list[dict] = []
    for c in load_claims():
        claim_rows: list[dict] = []
        for a, b in c.comparisons:
            missing = [e for e in (a, b) if e not in run]
            if missing:
                claim_rows += [_row(c, a, b, s, "", verdict=NOT_RUN, note=f"run it: {run_command(cfg, missing)}")
                               for s in c.statistics]
                continue
            try:
                claim_rows += _measure(cfg, c, a, b, curves, cfg.train.seeds)
            except (ValueError, KeyError, FileNotFoundError) as e:
                claim_rows += [_row(c, a, b, s, "", verdict=UNDECIDED, note=f"not measurable: {e}")
                               for s in c.statistics]
        # rows measured without a verdict (the step-axis speed-up) are not in the family Holm adjusts
        tested = [r for r in claim_rows if r.get("p_value") is not None and r["verdict"] != NO_VERDICT]
        for r, p in zip(tested, uq.holm([r["p_value"] for r in tested])):
            r["p_holm"] = p
        for r in claim_rows:
            if r["verdict"] is None:
                r["verdict"] = decide((r["lo"], r["hi"]), r["p_holm"] if r["p_holm"] is not None else math.nan,
                                      c.direction)
            if r["verdict"] == UNDECIDED and r.get("se") is not None and r["estimate"] is not None:
                r["needed_for_power"] = uq.units_for_power(r["estimate"], r["se"], r["n"])
                if not np.isfinite(r["needed_for_power"]) and r["needed_for_power"] != math.inf:
                    r["note"] = (r["note"] or "") + ("; no power estimate: censored resamples leave no standard "
                                                     "error (docs/method.md §11), a longer baseline run would "
                                                     "decide it")
            r["display"] = r["display"] or _display(r)
            if c.kind == "blockiness":
                r["note"] = jump_point_decision(r)
        add_scope(cfg, c, claim_rows, curves)
        rows += claim_rows
    df = pd.DataFrame(rows)
    return df.reindex(columns=COLUMNS)


def _display(r: dict) -> str:
    if r.get("estimate") is None or pd.isna(r.get("estimate")):
        return ""
    lo, hi = r["lo"], r["hi"]
    ci = "" if lo is None or pd.isna(lo) else f" [{_num(lo)}, {_num(hi)}]"
    return f"{r['estimate']:+.3g}{ci}"


def _num(v: float) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:+.3g}"


def _measure(cfg: Config, c: Claim, a: str, b: str, curves: dict[str, pd.DataFrame], runs: int = 1) -> list[dict]:
    """The rows of one comparison of one claim over `runs` training runs per arm (p-values not yet adjusted,
    verdict not yet decided)."""
    if c.kind == "tokens":
        return _token_rows(cfg, c, a, b)
    if c.kind == "fid_speedup":
        return _fid_rows(cfg, c, a, b, curves, runs)
    ua, ub = arm_units(cfg, a, runs), arm_units(cfg, b, runs)
    if isinstance(ua, str) or isinstance(ub, str):
        old = ua if isinstance(ua, str) else ub
        return [_row(c, a, b, s, "prompts", verdict=UNDECIDED,
                     note=f"{old}'s per-video units were not saved (scored before paired comparisons, or not yet "
                          f"scored): score it (pyramid-repro score --experiment {old} --backend synthetic)")
                for s in c.statistics]
    rows = [_from_paired(_row(c, a, b, s, "prompts"), paired_video_statistic(ua, ub, s, a, b, cfg.seed))
            for s in c.statistics]
    if c.kind == "blockiness":
        for r in rows:
            means = [float(np.nanmean(np.concatenate([video_values(x, r["statistic"])
                                                      for x in (u if isinstance(u, list) else [u])])))
                     for u in (ua, ub)]
            r["note"] = (f"mean per video: {a} {means[0]:+.3f}, {b} {means[1]:+.3f} (log((J + A) / (B + A)) of the "
                         "squared pixel steps across the jump-point edges J, the latent-pixel edges beside them B and "
                         "every edge A; 0 = no step at the jump points; eval/backends.py jump_blockiness)")
    return rows


def jump_point_decision(row: dict) -> str:
    """The note of a jump-point blockiness row, led by what its verdict decided in words (the claim: arm A, without
    corrective noise, shows more block structure at the jump points than arm B)."""
    a, b, verdict = row["arm_a"], row["arm_b"], row["verdict"]
    said = {SUPPORTED: f"decided: {a} has more block artifacts at the jump points than {b}",
            CONTRADICTED: f"decided: {a} has fewer block artifacts at the jump points than {b}",
            UNDECIDED: f"not decided: no difference in block artifacts at the jump points between {a} and {b} can be "
                       "told at this sample size"}.get(verdict)
    note = row.get("note") or ""
    return f"{said}; {note}" if said and note else said or note


def _fid_rows(cfg: Config, c: Claim, a: str, b: str, curves: dict[str, pd.DataFrame], runs: int = 1) -> list[dict]:
    """The rows of a fid_speedup claim: each speed-up on the claim's axis (direction and size verdicts), the same
    speed-up on `also_axis` beside it (the step axis, samples seen: measured, no verdict, outside the Holm family)
    and the FID difference at the stage's last point, over `runs` training runs per arm."""
    axes = [c.axis] + ([c.also_axis] if c.also_axis and c.also_axis != c.axis else [])
    to_real = None
    stats: dict[str, dict] = {}
    cache: dict = {}  # every axis reads the same curves of the same resamples
    for axis in axes:
        arms = [arm_fid_runs(cfg, curves, e, c.stage, axis, runs) for e in (a, b)]
        bad = [m for m in arms if isinstance(m, str)]
        if bad:
            return [_row(c, a, b, s, "captions", verdict=UNDECIDED, note="; ".join(bad)) for s in c.statistics]
        to_real = to_real or FrechetToFixed(*real_probe_stats(cfg))
        stats[axis] = speedup_statistic(arms[0], arms[1], to_real, cfg.seed, cache=cache)
    r = stats[c.axis]
    out = []
    for s in c.statistics:
        if s in TARGETS:
            row = _speedup_row(c, a, b, s, r["speedup"][TARGETS[s]], c.axis)
            for axis in axes[1:]:
                beside = _speedup_row(c, a, b, s, stats[axis]["speedup"][TARGETS[s]], axis)
                # no p-value: label swaps keep each arm's x, so on this axis "no difference" is not an effect of 0
                beside.update(statistic=f"{beside['statistic']}, x = {axis}", verdict=NO_VERDICT, p_value=None,
                              note=f"{beside['note']}; the claim is about compute ({c.axis}): this axis shows "
                                   "whether the saving is cheaper samples or faster learning per sample")
                row["display"] += f"; per {axis.replace('_', ' ')}: {beside['display']}"
                out += [row, beside]
            if len(axes) == 1:
                out.append(row)
        elif s == "final_fid":
            row = _from_paired(_row(c, a, b, s, "captions"), r["final_fid"])
            # lower FID is better: the claim predicts A's FID below B's, so the effect's sign is flipped
            row.update(estimate=-row["estimate"], lo=-row["hi"], hi=-row["lo"],
                       note=f"{b} FID - {a} FID at the stage's last point (equal compute), bias-corrected; "
                            "probe-feature FID (offline proxy, not Inception FID)")
            out.append(row)
        else:
            raise KeyError(f"statistic {s!r} of claim {c.id!r} is not one of a fid_speedup claim's "
                           f"({', '.join(TARGETS)}, final_fid)")
    return out


def _speedup_row(c: Claim, a: str, b: str, s: str, sp: dict, axis: str) -> dict:
    """One speed-up row (`speedup_statistic`'s entry `sp` for the target of statistic `s`, x = `axis`): the
    estimate inside its interval, the censored share of the resamples, no standard error when the observed
    speed-up is itself censored (a bound, not an effect: no power number), and on the claim's own axis the size
    verdict against the paper's number (`size_verdict`)."""
    p: uq.Paired = sp["paired"]
    row = _from_paired(_row(c, a, b, f"{s} (log x_{b} / x_{a})", "captions"), p)
    row["lo"], row["hi"] = sp["interval"]
    lo, hi = (math.exp(v) if not math.isnan(v) else v for v in sp["interval"])
    ci = f"[{lo:.3g}, {hi:.3g}]"  # an open end prints as inf
    note = (f"x = training {axis} in stage {c.stage}; target probe-feature FID {sp['target']:.4g} (plug-in, "
            f"{TARGETS[s]}); {sp['reason']}")
    if p.censored:
        note += f"; {censored_phrase(p.censored, p.resamples)}"
    shown = None
    if sp["lower_bound"]:
        shown = f">= {sp['lower_bound']:.3g}x {ci}"
        row["display"] = f">= {sp['lower_bound']:.3g}x (censored: {b} never reaches the target) {ci}"
        row["estimate"], row["se"] = math.log(sp["lower_bound"]), math.nan
    elif "not identified" in sp["reason"]:
        row["verdict"] = UNDECIDED
        row["display"] = "not identified"
        note += ("; both curves are at the target from their first evaluation, so the speed-up is not "
                 "identified: add earlier FID points (the stage's fid_points)")
    elif math.isfinite(p.estimate):
        shown = row["display"] = f"{math.exp(p.estimate):.3g}x {ci}"
    if c.paper and axis == c.axis and shown:
        row["size_verdict"] = f"{size_label(c, 'x')} {size_verdict((lo, hi), c.paper, c.size_test)} ({shown})"
    row["note"] = note + f"; paper: about {c.paper:g}x" if c.paper else note
    return row


def censored_phrase(share: float, resamples: int) -> str:
    """How many resamples of a statistic were censored, in words: 'every resample censored' only when it is true."""
    if share >= 1.0:
        return f"every resample censored (all {resamples})"
    return f"{round(share * resamples)} of {resamples} resamples censored ({share:.1%})"


def _token_rows(cfg: Config, c: Claim, a: str, b: str) -> list[dict]:
    """The token claim's rows: the paper-scale reduction (exact arithmetic: its interval is the number itself; a
    reduction in the predicted direction is supported, the paper's "more than 85%" is its size test) and this
    run's ledger reduction, measured without a verdict."""
    paper = token_report(load_config("paper"), 10)
    red = paper.reduction_percent
    size = (f"{size_label(c, '%')} {size_verdict((red, red), c.paper, c.size_test)} ({red:.1f}%)"
            if c.paper is not None else None)
    rows = [_row(c, a, b, "token_reduction (paper scale, 10 s at 768p)", "arithmetic", estimate=red,
                 verdict=decide((red, red), 0.0, c.direction), size_verdict=size,  # exact: no sampling error
                 method="analytic token count (flow/cost.py)",
                 display=f"{red:.1f}%" + (f" (paper: >{c.paper:g}%)" if c.paper is not None else ""),
                 note=f"pyramid {paper.pyramid_tokens:,.0f} vs full sequence {paper.fullseq_tokens:,} tokens per "
                      "training sample")]
    ledger = ledger_summary(cfg)
    video = [s.name for s in cfg.train.curriculum if s.kind == "video"]
    per = {}
    for e in (a, b):
        part = ledger[(ledger["experiment"] == e) & ledger["stage"].isin(video)] if not ledger.empty else ledger
        if len(part) and part["samples"].sum() > 0:
            per[e] = float(part["tokens"].sum()) / float(part["samples"].sum())
    if len(per) == 2:
        red = 100.0 * (1.0 - per[a] / per[b])
        rows.append(_row(c, a, b, f"token_reduction (this run's ledger, {cfg.profile})", "ledger", estimate=red,
                         verdict=NO_VERDICT, method="ledger tokens / samples of the video stages",
                         display=f"{red:.1f}%",
                         note=f"{a} {per[a]:,.0f} vs {b} {per[b]:,.0f} video tokens per training sample at this "
                              f"profile's {cfg.data.frames} frames; the paper's claim is about 10 s clips"))
    return rows


def render_claims(cfg: Config, out: Path, curves: dict[str, pd.DataFrame] | None = None,
                  claims: pd.DataFrame | None = None) -> Path:
    """reports/claims.{csv,md,pdf}: the claims table (`claims_frame`, or the one given) and a forest plot of every
    tested effect."""
    df = claims_frame(cfg, curves) if claims is None else claims
    df.to_csv(out / "claims.csv", index=False)
    md = [f"# Claims of the paper, decided by paired tests — {footer(cfg)}", "",
          "Effect: arm A against arm B on shared units (prompts or captions), with its paired 95% interval and "
          "Holm-adjusted p-value (docs/method.md §11). `needed` = prompts (captions) an 80%-power paired "
          "test would need at the measured effect and spread; `seeds` = training runs per arm a test across runs "
          "would need. A claim with a stated size (\"about 3x\") has a size verdict beside the direction one: "
          "consistent when the interval contains the size. " + _scope_sentence(cfg), ""]
    md.append("| claim | arms | statistic | effect [95%] | p (Holm) | verdict | needed | seeds | note |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for r in df.itertuples():
        md.append(f"| {r.claim} ({r.where}) | {r.arm_a} vs {r.arm_b} | {r.statistic} | {r.display or ''} | "
                  f"{_p(r.p_holm)} | **{verdict_text(r.verdict, r.size_verdict)}** "
                  f"{_s(r.scope) if r.verdict != NOT_RUN else ''} | {_needed(r.needed_for_power)} | "
                  f"{_needed(r.seeds_needed)} | {_s(r.note)} |")
    (out / "claims.md").write_text("\n".join(md) + "\n")
    plt = _plt()

    colours = {SUPPORTED: "#cdebc5", CONTRADICTED: "#f4c7c3", UNDECIDED: "#fff2cc", NO_VERDICT: "#e8e8e8",
               NOT_RUN: "#ffffff"}
    shown = pd.DataFrame({
        "claim": ["\n".join(textwrap.wrap(str(x), 44)) for x in df["claim"]],
        "arms": [f"{a} vs {b}" for a, b in zip(df["arm_a"], df["arm_b"])],
        "statistic": ["\n".join(textwrap.wrap(str(x), 26)) for x in df["statistic"]],
        "effect [95%]": ["\n".join(textwrap.wrap(_s(x), 34)) for x in df["display"]],
        "p (Holm)": [_p(v) for v in df["p_holm"]],
        "verdict": ["\n".join(textwrap.wrap(f"{verdict_text(v, z)} ({_s(sc)})" if _s(sc) and v != NOT_RUN
                                             else verdict_text(v, z), 24))
                    for v, z, sc in zip(df["verdict"], df["size_verdict"], df["scope"])],
        "needed": [_needed(v) for v in df["needed_for_power"]],
        "seeds": [_needed(v) for v in df["seeds_needed"]]})
    heights = [max(str(v).count("\n") + 1 for v in row) for row in shown.values]
    lines = sum(heights) + 1
    table_h = 0.6 + 0.17 * lines
    fig = plt.figure(figsize=(15, table_h + 3.4))
    gs = fig.add_gridspec(2, 1, height_ratios=[table_h, 3.0], hspace=0.25)
    ax = fig.add_subplot(gs[0])
    ax.axis("off")
    t = ax.table(cellText=shown.values, colLabels=list(shown.columns), cellLoc="center", bbox=[0, 0, 1, 1],
                 colWidths=[0.23, 0.13, 0.12, 0.19, 0.06, 0.15, 0.06, 0.06])
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    for j in range(len(shown.columns)):
        t[0, j].set_height(1 / lines)
        t[0, j].set_text_props(weight="bold")
    for i, h in enumerate(heights, start=1):
        for j in range(len(shown.columns)):
            cell = t[i, j]
            cell.set_height(h / lines)
            cell.set_facecolor(colours.get(df["verdict"].iloc[i - 1], "white"))
    ax.set_title(f"Claims of the paper, decided by paired tests ({scope_of(cfg.train.seeds)})", fontsize=11)
    ax2 = fig.add_subplot(gs[1])
    _forest(ax2, df)
    note = ("Green: supported (paired 95% interval on the side the paper predicts, Holm-adjusted permutation p < 0.05);"
            " red: contradicted; yellow: undecided ('needed' = prompts or captions for 80% power at the measured "
            "effect); grey: measured, no effect stated; white: not run by this profile (the CSV/MD give the "
            "command). Offline proxies (synthetic world, probe features), not VBench or Inception FID. "
            + _scope_sentence(cfg))
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(note, 200) + [footer(cfg)]), fontsize=7)
    fig.savefig(out / "claims.pdf", bbox_inches="tight")
    plt.close(fig)
    return out / "claims.pdf"


def _forest(ax, df: pd.DataFrame) -> None:
    """Every tested effect in units of its bootstrap standard error, signed so that the paper's prediction is to
    the right: a row right of the dashed line at +1.96 supports the claim."""
    rows = [r for r in df.itertuples() if r.estimate is not None and not pd.isna(r.estimate)
            and r.method and "bootstrap" in str(r.method)]
    if not rows:
        ax.axis("off")
        ax.text(0.5, 0.5, "no paired comparison could be made", ha="center")
        return
    for i, r in enumerate(rows):
        se = r.se if r.se is not None and np.isfinite(r.se) else np.nan
        if not se > 0:  # every resample gave the same effect: off the scale on its side, if any
            z = 0.0 if r.estimate == 0 else np.sign(r.estimate) * 8
            ax.plot([z], [i], "o", color="C0")
            continue
        lo = r.lo / se if np.isfinite(r.lo) else (-8 if r.lo < 0 else 8)
        hi = r.hi / se if np.isfinite(r.hi) else (8 if r.hi > 0 else -8)
        ax.plot([np.clip(lo, -8, 8), np.clip(hi, -8, 8)], [i, i], color="k", lw=1.2)
        ax.plot([np.clip(r.estimate / se, -8, 8)], [i], "o", color="C0")
    ax.axvline(0, color="grey", lw=1)
    for v in (-1.96, 1.96):
        ax.axvline(v, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r.claim_id}: {r.arm_a} vs {r.arm_b}, {r.statistic} [{_s(r.scope)}]" for r in rows],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-8, 8)
    ax.set_xlabel("paired effect / its standard error (the paper's prediction is > 0; clipped at +-8)", fontsize=8)


def _scope_sentence(cfg: Config) -> str:
    """What the verdicts are about (the report's footnote)."""
    if cfg.train.seeds == 1:
        return ("Every verdict is about this training run of each experiment (train.seeds 1): another seed may "
                "decide otherwise; `seeds` says how many runs per arm a test across runs would need.")
    return (f"Verdicts across {cfg.train.seeds} training runs per experiment: runs and prompts resampled together, "
            "run-level t test (docs/method.md §11).")


def _s(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _p(v: Any) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.3f}"


def _needed(v: Any) -> str:
    if v is None or pd.isna(v):
        return ""
    return "inf" if v == math.inf else f"{math.ceil(v):,}"
