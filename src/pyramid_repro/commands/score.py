"""`pyramid-repro score`: score an experiment's sampled videos with one backend -> metrics/<backend>.json
(eval/score.py does the work)."""

from __future__ import annotations

from pathlib import Path

from pyramid_repro.cliutil import add_threads_arg, config_from_args, config_parser
from pyramid_repro.backend_specs import backend_names
from pyramid_repro.eval.score import score_experiment


def main(argv: list[str] | None = None) -> int:
    ap = config_parser("score",
                       "Score an experiment's sampled videos with one backend (synthetic, "
                       "fid-probe, clean-fid, vbench, evalcrafter) -> metrics/<backend>.json")
    ap.add_argument("--backend", required=True, choices=sorted(backend_names()))
    ap.add_argument("--videos", type=Path, help="video folder with samples.json (default: the experiment's samples)")
    ap.add_argument("--out", type=Path)
    add_threads_arg(ap)
    args = ap.parse_args(argv)
    cfg = config_from_args(args, require_experiment=True)
    doc = score_experiment(cfg, args.experiment, args.backend, args.videos, args.out)
    agg = doc.get("aggregate") or {}
    print(f"{args.experiment} [{doc['label']}]: " + ", ".join(f"{k} {v:.2f}" for k, v in agg.items() if v is not None)
          + (f" FID {doc['fid']:.3f}" if doc.get("fid") is not None else ""))
    return 0
