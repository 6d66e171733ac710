"""`pyramid-repro train-vae`: train the profile's causal 3D video VAE (train/vae.py train_vae)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pyramid_repro.cliutil import add_config_args, add_threads_arg, config_from_args
from pyramid_repro.train.plan import IGNORE_OPTION, MemoryPlanError, check_job
from pyramid_repro.train.vae import train_vae


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyramid-repro train-vae",
                                 description="Train the profile's causal 3D video VAE (resumes from its newest "
                                 "checkpoint); writes results/<profile>/vae/.")
    add_config_args(ap)
    ap.add_argument("--out", type=Path, help="output folder (default results/<profile>/vae)")
    add_threads_arg(ap)
    ap.add_argument("--max-steps", type=int, help="stop after this many steps, leaving a checkpoint (tests)")
    ap.add_argument(IGNORE_OPTION, action="store_true", help="train even when the memory plan (train/plan.py) "
                    "says the VAE does not fit the device (also: --set compute.memory_check=false)")
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    if not args.ignore_memory_plan:
        try:  # before anything is allocated on the device
            check_job(cfg, "vae")
        except MemoryPlanError as e:
            if os.environ.get("RANK", "0") == "0":
                print(f"pyramid-repro train-vae: {e}", file=sys.stderr)
            return 3
    t0 = time.time()
    out = train_vae(cfg, args.out, args.max_steps)
    print(f"VAE training done in {time.time() - t0:.1f} s: {out}")
    return 0
