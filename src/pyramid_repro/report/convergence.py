"""FID convergence speed-up of the spatial pyramid over full-sequence flow matching (docs/method.md §7: "FID
converges about 3x faster with the pyramid").

Pure functions on FID curves (x = training steps, samples, FLOPs or device-hours; y = FID, lower is better).
Noisy FID points are first smoothed into a monotone "best so far" curve, then the speed-up at a target FID is
x_baseline(target) / x_pyramid(target), each x the first crossing of the target (linear interpolation).
Two targets are reported:

* ``common``: the worse of the two curves' best smoothed FIDs -- both curves reach it by construction, so it is
  always defined when both curves exist (the robust headline number);
* ``pyramid_best``: the best smoothed FID the pyramid reaches -- the paper's framing ("how long does the
  baseline need to match the pyramid"); "not reached" when the baseline never gets there, with the lower bound
  x_baseline_last / x_pyramid(target) (the speed-up is at least that).

With bootstrap bands (fid_lo / fid_hi of each point, eval/uncertainty.py) each curve's crossing becomes a range:
the lower band reaches the target first, the upper band last. A speed-up is stated only when the two ranges are
disjoint (`separated`); otherwise the curves cannot be told apart at that target with this many samples.
The reports feed `speedup_table` the plug-in FIDs of the points' saved features, without bands (`claims.
plug_in_curves`): the claims table computes the same speed-up at the same target, and its paired interval is the
one they state (docs/method.md §11).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PAPER_SPEEDUP = 3.0  # docs/method.md §7
AXES = ("step", "samples_seen", "flops", "device_hours")


def smooth(y: Sequence[float] | np.ndarray, k: int = 3) -> np.ndarray:
    """Running minimum of a centred moving average of width k (edges padded): a monotone 'best FID so far'."""
    y = np.asarray(y, dtype=float)
    if len(y) == 0:
        return y
    if not np.all(np.isfinite(y)):
        raise ValueError("FID curve contains NaN/inf values; drop failed evaluations before smoothing")
    k = max(1, min(int(k), len(y)))
    ma = np.convolve(np.pad(y, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")
    return np.minimum.accumulate(ma)


def first_crossing(x: Sequence[float] | np.ndarray, fid: Sequence[float] | np.ndarray, target: float,
                   k: int = 3) -> float | None:
    """Smallest x at which the smoothed FID reaches `target` (linear interpolation between points), or None."""
    x = np.asarray(x, dtype=float)
    s = smooth(fid, k)
    if len(x) != len(s):
        raise ValueError(f"x has {len(x)} points but the FID curve has {len(s)}")
    idx = np.nonzero(s <= target)[0]
    if len(idx) == 0:
        return None
    i = int(idx[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], s[i - 1], s[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)


def crossing_range(x, band: tuple | None, target: float, k: int = 3) -> tuple[float, float] | None:
    """(earliest, latest) x at which a curve with bootstrap band (lo, hi) reaches `target`: the first crossing of
    its lower and of its upper band (inf when that band never gets there). None without a band."""
    if band is None:
        return None
    lo, hi = (first_crossing(x, b, target, k) for b in band)
    return (np.inf if lo is None else lo, np.inf if hi is None else hi)


def convergence_speedup(base_x, base_fid, pyr_x, pyr_fid, target: str | float = "common", k: int = 3,
                        base_band: tuple | None = None, pyr_band: tuple | None = None) -> dict:
    """Speed-up = x the baseline needs to reach a target FID / x the pyramid needs.

    target: "common" (worse of the two best smoothed FIDs), "pyramid_best" (the pyramid's best smoothed FID) or
    a number. Returns {"target", "speedup", "baseline_x", "pyramid_x", "reason", "lower_bound"}; speedup is None
    with reason "not reached" when a curve never reaches the target (lower_bound then gives the least speed-up
    consistent with the data when only the baseline misses it). With both bands (fid_lo, fid_hi arrays) also
    "baseline_x_range", "pyramid_x_range" (`crossing_range`), "speedup_range" and "separated".
    """
    out = {"target": None, "speedup": None, "baseline_x": None, "pyramid_x": None, "reason": "", "lower_bound": None,
           "baseline_x_range": None, "pyramid_x_range": None, "speedup_range": None, "separated": None}
    out = out | _ranges(base_x, pyr_x, target, base_fid, pyr_fid, base_band, pyr_band, k)
    if len(base_fid) == 0 or len(pyr_fid) == 0:
        return out | {"reason": "missing curve"}
    sb, sp = smooth(base_fid, k), smooth(pyr_fid, k)
    if target == "common":
        tgt = float(max(sb[-1], sp[-1]))
    elif target == "pyramid_best":
        tgt = float(sp[-1])
    elif isinstance(target, (int, float)):
        tgt = float(target)
    else:
        raise ValueError(f"target must be 'common', 'pyramid_best' or a number, got {target!r}")
    xb = first_crossing(base_x, base_fid, tgt, k)
    xp = first_crossing(pyr_x, pyr_fid, tgt, k)
    out.update(target=tgt, baseline_x=xb, pyramid_x=xp)
    if xp is None:
        return out | {"reason": "not reached by pyramid"}
    if xp <= 0:
        return out | {"reason": "pyramid reaches the target at x=0 (undefined ratio)"}
    if xb is None:
        return out | {"reason": "not reached by baseline", "lower_bound": float(np.asarray(base_x, float)[-1]) / xp}
    # a curve already at the target at its first evaluation crossed it earlier than we can see: the ratio is
    # then only a bound (pyramid early -> at least this speed-up; baseline early -> at most)
    p0, b0 = sp[0] <= tgt, sb[0] <= tgt
    if p0 and b0:  # the ratio of the two first evaluations says nothing about when either curve got there
        return out | {"reason": "both at target from their first evaluation (speed-up not identified)"}
    reason = ("ok" if not (p0 or b0) else "pyramid at target from its first evaluation (speed-up is a lower bound)"
              if p0 else "baseline at target from its first evaluation (speed-up is an upper bound)")
    return out | {"speedup": xb / xp, "reason": reason}


def _ranges(base_x, pyr_x, target, base_fid, pyr_fid, base_band, pyr_band, k: int) -> dict:
    """The band part of `convergence_speedup` (empty without both bands or a target)."""
    if base_band is None or pyr_band is None or len(base_fid) == 0 or len(pyr_fid) == 0:
        return {}
    sb, sp = smooth(base_fid, k), smooth(pyr_fid, k)
    tgt = (float(max(sb[-1], sp[-1])) if target == "common" else float(sp[-1]) if target == "pyramid_best"
           else float(target))
    rb, rp = crossing_range(base_x, base_band, tgt, k), crossing_range(pyr_x, pyr_band, tgt, k)
    separated = bool(rp[1] < rb[0] or rb[1] < rp[0])
    # speed-up range: baseline's earliest / pyramid's latest crossing .. baseline's latest / pyramid's earliest
    # (inf where a band never reaches the target; nan where the ratio is undefined)
    return {"baseline_x_range": [float(v) for v in rb], "pyramid_x_range": [float(v) for v in rp],
            "separated": separated, "speedup_range": [_ratio(rb[0], rp[1]), _ratio(rb[1], rp[0])]}


def _ratio(a: float, b: float) -> float:
    if b == 0 or (np.isinf(a) and np.isinf(b)):
        return float("nan")
    return float(a / b)


def speedup_table(curves: dict[str, pd.DataFrame], baseline: str = "fullseq", pyramid: str = "pyramid",
                  axes: Sequence[str] = AXES, k: int = 3, stage: str | None = None) -> pd.DataFrame:
    """One row per (x axis, target kind) present in both curves: target FID, x of each, speed-up or why not.

    stage: only the points of that curriculum stage (column `stage`; x stays cumulative) -- FID is not comparable
    across stages (an image stage is scored on first frames), so the last stage gives the cleanest comparison."""
    if baseline not in curves or pyramid not in curves:
        return pd.DataFrame()
    b, p = curves[baseline], curves[pyramid]
    if stage is not None:
        if "stage" not in b.columns or "stage" not in p.columns:
            raise ValueError("FID curves have no `stage` column; cannot restrict the speed-up to one stage")
        b, p = b[b["stage"] == stage], p[p["stage"] == stage]
        if b.empty or p.empty:
            return pd.DataFrame()
    rows = []
    for ax in axes:
        if ax not in b.columns or ax not in p.columns:
            continue
        for kind in ("common", "pyramid_best"):
            r = convergence_speedup(b[ax].to_numpy(), b["fid"].to_numpy(), p[ax].to_numpy(), p["fid"].to_numpy(),
                                    kind, k, _band(b), _band(p))
            rows.append({"stage": stage or "all", "axis": ax, "target_kind": kind, **r,
                         "paper_speedup": PAPER_SPEEDUP})
    return pd.DataFrame(rows)


def _band(curve: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(fid_lo, fid_hi) of a curve whose every point has an interval, else None."""
    if not {"fid_lo", "fid_hi"} <= set(curve.columns):
        return None
    lo, hi = (pd.to_numeric(curve[c], errors="coerce").to_numpy(float) for c in ("fid_lo", "fid_hi"))
    return (lo, hi) if np.isfinite(lo).all() and np.isfinite(hi).all() else None


def _fmt_range(r) -> str:
    return "[" + ", ".join("?" if v is None or pd.isna(v) else "inf" if np.isinf(v) else f"{v:.3g}" for v in r) + "]"


def describe(row: dict | pd.Series) -> str:
    """One line for a speed-up row: '2.4x', '2.4x [1.6, 3.9]' (bands separated), 'not separated ...' (bands
    overlap: no speed-up stated) or 'not reached (>= 1.3x)'."""
    sep = row.get("separated")
    lb = row.get("lower_bound")
    if str(row.get("reason", "")).startswith("not reached by baseline") and lb is not None and not pd.isna(lb):
        # censored: the baseline never gets there, so the speed-up is at least x_last / x_pyramid
        return f">= {lb:.2f}x (censored: fullseq never reaches the target; x_last / x_pyramid)"
    if "not identified" in str(row.get("reason", "")):
        return f"undecided: {row['reason']}"
    if sep is not None and not pd.isna(sep) and not sep:
        return (f"not separated: the bootstrap bands overlap (pyramid reaches it at "
                f"{_fmt_range(row['pyramid_x_range'])}, fullseq at {_fmt_range(row['baseline_x_range'])}); "
                "no speed-up stated at this sample size")
    suffix = f" {_fmt_range(row['speedup_range'])}" if sep else ""
    if row["speedup"] is not None and not pd.isna(row["speedup"]):
        bound = {"lower": ">= ", "upper": "<= "}
        kind = next((k for k in bound if f"{k} bound" in str(row.get("reason", ""))), None)
        return f"{bound[kind] if kind else ''}{row['speedup']:.2f}x{suffix}"
    lb = row.get("lower_bound")
    return f"{row['reason']}" + (f" (>= {lb:.2f}x)" if lb is not None and not pd.isna(lb) else "") + suffix
