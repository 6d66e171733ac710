"""`pyramid-repro fid-points`: sample and score the FID snapshots of one DiT stage into its fid.csv
(eval/fid_points.py does the work)."""

from __future__ import annotations

from pathlib import Path

from pyramid_repro.cliutil import add_threads_arg, config_from_args, config_parser
from pyramid_repro.eval.fid_points import fid_points


def main(argv: list[str] | None = None) -> int:
    ap = config_parser(
        "fid-points",
        "Sample and score the FID snapshots a DiT stage saved (fid_snapshots/, written by train-dit) "
        "into its fid.csv and fid_points/step_<n>.npz (probe features with each image's caption).",
    )
    ap.add_argument("--stage", required=True, help="curriculum stage name (train.curriculum[].name)")
    add_threads_arg(ap)
    ap.add_argument("--out", type=Path, help="stage folder (default: layout.stage, results/<profile>/<experiment>/"
                    "dit/<stage>, of the experiment that trains it)")
    args = ap.parse_args(argv)
    cfg = config_from_args(args, require_experiment=True)
    print(f"wrote {fid_points(cfg, args.experiment, args.stage, args.out)}")
    return 0
