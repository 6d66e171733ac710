"""`pyramid-repro report`: render every report its inputs allow into reports/ (report/render.py does the work)."""

from __future__ import annotations

from pathlib import Path

from pyramid_repro.cliutil import config_from_args, config_parser
from pyramid_repro.report.render import render_all


def main(argv: list[str] | None = None) -> int:
    ap = config_parser("report",
                       "Render every report the results allow: table1/table5 (.pdf/.csv/.md), "
                       "fid_convergence.pdf, ablations.pdf, gpu_hours.pdf.")
    ap.add_argument("--out", type=Path, help="reports folder (default: layout.reports: <reports>/ for the default "
                    "profile, <reports>/<profile>/ for the others)")
    ap.add_argument("--metrics", type=Path, nargs="+", help="metrics JSONs to report (default: every one the run has)")
    ap.add_argument("--fid-curves", type=Path, nargs="+", help="fid_curve.csv files (default: every one the run has)")
    args = ap.parse_args(argv)
    for p in render_all(config_from_args(args), args.out, args.metrics, args.fid_curves):
        print(f"wrote {p}")
    return 0
