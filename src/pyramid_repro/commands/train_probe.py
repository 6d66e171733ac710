"""`pyramid-repro train-probe`: train the offline probe network on real synthetic-world frames
(eval/probe.py does the work)."""

from __future__ import annotations

import json
from pathlib import Path

from pyramid_repro.cliutil import add_threads_arg, config_from_args, config_parser
from pyramid_repro.eval.probe import train_probe


def main(argv: list[str] | None = None) -> int:
    ap = config_parser("train-probe",
                       "Train the probe CNN on real synthetic-world frames (offline scoring "
                       "backends `synthetic` and `fid-probe`); writes results/<profile>/probe/.")
    ap.add_argument("--steps", type=int, help="training steps (default: eval.probe_steps)")
    ap.add_argument("--out", type=Path, help="folder for probe.safetensors, probe.json, real_stats.npz "
                    "(default: layout.probe)")
    add_threads_arg(ap)
    args = ap.parse_args(argv)
    info = train_probe(config_from_args(args), out=args.out, steps=args.steps)
    print(json.dumps(info["heldout_accuracy"], indent=2))
    return 0
