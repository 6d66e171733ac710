"""`pyramid-repro train-vae`: train the profile's causal 3D video VAE (train/vae.py train_vae)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pyramid_repro.cliutil import add_config_args, add_threads_arg, config_from_args
from pyramid_repro.train.vae import train_vae


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyramid-repro train-vae",
                                 description="Train the profile's causal 3D video VAE (resumes from its newest "
                                 "checkpoint); writes results/<profile>/vae/.")
    add_config_args(ap)
    ap.add_argument("--out", type=Path, help="output folder (default results/<profile>/vae)")
    add_threads_arg(ap)
    ap.add_argument("--max-steps", type=int, help="stop after this many steps, leaving a checkpoint (tests)")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = train_vae(config_from_args(args), args.out, args.max_steps)
    print(f"VAE training done in {time.time() - t0:.1f} s: {out}")
    return 0
