"""`pyramid-repro train-dit`: train one curriculum stage of one experiment (train/dit.py train_stage), or collect an
experiment's FID-vs-compute curve across its stages (train/dit.py collect_fid_curve)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pyramid_repro.cliutil import add_config_args, add_threads_arg, config_from_args
from pyramid_repro.train.dit import collect_fid_curve, train_stage
from pyramid_repro.train.plan import IGNORE_OPTION, MemoryPlanError, check_job


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyramid-repro train-dit",
        description="Train one curriculum stage of one experiment (resumes from its newest checkpoint), or "
        "collect an experiment's FID-vs-compute curve across stages (--collect-fid-curve).",
    )
    add_config_args(ap)
    ap.add_argument("--stage", help="curriculum stage name (train.curriculum[].name)")
    add_threads_arg(ap)
    ap.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (tests, debugging)")
    ap.add_argument("--collect-fid-curve", action="store_true", help="write the experiment's fid_curve.csv")
    ap.add_argument(IGNORE_OPTION, action="store_true", help="train even when the memory plan (train/plan.py) "
                    "says the stage does not fit the device (also: --set compute.memory_check=false)")
    ap.add_argument("--out", type=Path, help="stage folder (default: layout.stage, results/<profile>/<experiment>/"
                    "dit/<stage>) or, with --collect-fid-curve, the CSV to write (default: layout.fid_curve)")
    args = ap.parse_args(argv)
    cfg = config_from_args(args, require_experiment=True)
    if args.collect_fid_curve:
        out = args.out or cfg.layout.fid_curve(args.experiment)
        print(f"wrote {collect_fid_curve(cfg, args.experiment, out)}")
        return 0
    if not args.stage:
        ap.error("--stage is required")
    if not args.ignore_memory_plan:
        try:  # before anything is allocated on the device
            check_job(cfg, "dit", args.experiment, args.stage)
        except MemoryPlanError as e:
            if os.environ.get("RANK", "0") == "0":
                print(f"pyramid-repro train-dit: {e}", file=sys.stderr)
            return 3
    out = train_stage(cfg, args.experiment, args.stage, args.out, args.max_steps)
    print(f"finished {args.experiment}/{args.stage}: {out}")
    return 0
