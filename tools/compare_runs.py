#!/usr/bin/env python
"""Are two runs of the workflow the same measurement? Compares what a run measured, file by file, ignoring only
what says when, where and from which commit it ran.

    python tools/compare_runs.py RUN_A RUN_B [--profile tiny]

RUN_A and RUN_B are working directories of two runs (each with results/<profile>/ and reports/). Compared:
every metrics JSON and its per-video units (results/<profile>/<experiment>/metrics/), every FID point
(dit/<stage>/fid_points/*.npz, fid.csv, fid_curve.csv), every loss trace (train_log.csv of the VAE and of each DiT
stage), every done.json, the VAE's eval.json and the probe's probe.json, and the CSV reports. JSON values are
compared exactly after dropping the provenance fields that name the run rather than what it measured (commit,
created_utc, host, and wall-clock fields: timings, device-hours and the rows and axes built on them); arrays exactly
(NaN equal to NaN), except a FID point's cache key. Prints one line per file and exits 1
if any differ or exist in one run only. Used to show that a refactor changed no result (docs/design.md §6).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

# fields that say when/where a run happened, not what it measured
VOLATILE = {"commit", "created_utc", "host", "seconds", "wall_seconds", "elapsed_s", "wall_s", "device_hours",
            "started_utc", "finished_utc", "duration_s", "hours", "gpu_hours", "train_seconds"}
# CSV rows that report a timing (the GPU-hour audit's measured rows, the FID-vs-device-hours axis): skipped
TIMING_ROWS = {"device_hours", "wall_seconds", "tokens_per_device_second", "seconds", "max_rss_mb",
               "device-hours at this run's measured FLOP/s"}
# a FID point's `key` hashes its snapshot's files (a rerun reuses a point whose key matches): a cache key, which
# changes with the snapshot's config.json even when the weights and every measured value are the same
NOT_MEASURED = {"key"}
PATTERNS = ("*/metrics/*.json", "*/metrics/*.units.npz", "*/dit/*/fid_points/*.npz", "*/dit/*/fid.csv",
            "*/fid_curve.csv", "*/dit/*/train_log.csv", "vae/train_log.csv", "*/dit/*/done.json", "vae/eval.json",
            "probe/probe.json")
REPORTS = ("*.csv",)


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in VOLATILE}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _same_npz(a: Path, b: Path) -> str | None:
    x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
    if set(x.files) != set(y.files):
        return f"keys differ: {sorted(set(x.files) ^ set(y.files))}"
    for k in x.files:
        if k in VOLATILE or k in NOT_MEASURED:
            continue
        u, v = x[k], y[k]
        if u.shape != v.shape or u.dtype != v.dtype:
            return f"{k}: {u.dtype}{u.shape} vs {v.dtype}{v.shape}"
        if u.dtype.kind in "fc":
            if not np.array_equal(u, v, equal_nan=True):
                return f"{k}: max |diff| {np.nanmax(np.abs(u - v)):.3g}"
        elif not np.array_equal(u, v):
            return f"{k}: values differ"
    return None


def _same_csv(a: Path, b: Path) -> str | None:
    def rows(p: Path) -> list[dict]:
        return [r for r in csv.DictReader(p.open())
                if r.get("quantity") not in TIMING_ROWS and r.get("axis") not in TIMING_ROWS]

    ra, rb = rows(a), rows(b)
    if len(ra) != len(rb):
        return f"{len(ra)} vs {len(rb)} rows"
    for i, (x, y) in enumerate(zip(ra, rb)):
        x, y = _strip(x), _strip(y)
        if x != y:
            keys = [k for k in x if x.get(k) != y.get(k)]
            return f"row {i}: {keys[:5]} differ (e.g. {keys[0]}: {x.get(keys[0])} vs {y.get(keys[0])})"
    return None


def _same_json(a: Path, b: Path) -> str | None:
    x, y = (_strip(json.loads(p.read_text())) for p in (a, b))
    if x == y:
        return None
    diffs = []

    def walk(u, v, path):
        if isinstance(u, dict) and isinstance(v, dict):
            for k in sorted(set(u) | set(v)):
                walk(u.get(k), v.get(k), f"{path}.{k}")
        elif u != v and not (isinstance(u, float) and isinstance(v, float) and np.isnan(u) and np.isnan(v)):
            diffs.append(f"{path}: {u!r} vs {v!r}")

    walk(x, y, "")
    return "; ".join(diffs[:3]) if diffs else None


def compare(run_a: Path, run_b: Path, profile: str) -> int:
    base_a, base_b = run_a / "results" / profile, run_b / "results" / profile
    rel = set()
    for pattern in PATTERNS:
        rel |= {p.relative_to(base_a) for p in base_a.glob(pattern)}
        rel |= {p.relative_to(base_b) for p in base_b.glob(pattern)}
    pairs = [(base_a / r, base_b / r, f"results/{profile}/{r}") for r in sorted(rel)]
    rep_a, rep_b = run_a / "reports", run_b / "reports"
    for pattern in REPORTS:
        names = {p.relative_to(rep_a) for p in rep_a.glob(pattern)}
        names |= {p.relative_to(rep_b) for p in rep_b.glob(pattern)}
        pairs += [(rep_a / r, rep_b / r, f"reports/{r}") for r in sorted(names)]
    bad = 0
    for a, b, name in pairs:
        if not (a.exists() and b.exists()):
            why = f"only in {'A' if a.exists() else 'B'}"
        elif name.endswith(".npz"):
            why = _same_npz(a, b)
        elif name.endswith(".csv"):
            why = _same_csv(a, b)
        else:
            why = _same_json(a, b)
        bad += why is not None
        print(f"{'same' if why is None else 'DIFF'}  {name}{'' if why is None else '  ' + why}")
    print(f"{len(pairs) - bad} of {len(pairs)} files the same" + (f", {bad} differ" if bad else ""))
    return 1 if bad or not pairs else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path, help="working directory of the first run")
    ap.add_argument("run_b", type=Path, help="working directory of the second run")
    ap.add_argument("--profile", default="tiny", help="profile whose results/<profile>/ to compare (default: tiny)")
    args = ap.parse_args(argv)
    return compare(args.run_a, args.run_b, args.profile)


if __name__ == "__main__":
    sys.exit(main())
