"""`pyramid-repro audit`: the GPU-hour audit (docs/design.md §3) printed as tables, and gpu_hours.pdf
(report/audit.py does the arithmetic, report/render.py draws the figure)."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from pyramid_repro.cliutil import config_from_args, config_parser
from pyramid_repro.report.audit import (A100_BF16_PEAK, ASSUMED_MFU, MEASURE_MFU, benchmark_summary, implied_mfu,
                                        kind_hours, ledger_summary, measured_mfu, measured_throughput,
                                        paper_projection,
                                        paper_table, performance_file, render_gpu_hours)
from pyramid_repro.report.paper import paper_a100_hours


def _print(title: str, df: pd.DataFrame) -> None:
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right")
    for r in df.itertuples(index=False):
        t.add_row(*[f"{v:,.4g}" if isinstance(v, float) else str(v) for v in r])
    Console(width=160).print(t)


def main(argv: list[str] | None = None) -> int:
    ap = config_parser("audit",
                       "GPU-hour audit: the paper's Table 4 arithmetic vs the 20.7k claim, this "
                       "run's ledgers and benchmarks, and a projection of the paper profile's cost.")
    ap.add_argument("--paper", action="store_true", help="only the paper's own arithmetic (needs no run)")
    args = ap.parse_args(argv)
    pa = paper_a100_hours()
    _print("Paper, Table 4 (128 A100)", paper_table())
    print(f"total: {pa['total']:,.0f} A100-hours (paper claims 20.7k; VAE excluded, about "
          f"{pa['vae_a100_hours_estimate']:,.0f} A100-hours separately; Open-Sora 1.2 claims >40k)")
    if args.paper:
        return 0
    cfg = config_from_args(args)
    led = ledger_summary(cfg)
    if led.empty:
        print(f"no ledgers under {cfg.layout.results} yet (train something first)")
    else:
        _print(f"This run (profile {cfg.profile}): ledger per experiment and stage", led)
        print(f"total device-hours of this run: {led['device_hours'].sum():.4f} ("
              + "; ".join(f"{label}: {h:.4f}" for label, h in kind_hours(led).items()) + ")")
    bench = benchmark_summary(cfg)
    if not bench.empty:
        _print("Snakemake benchmarks (wall seconds per job)", bench)
        print(f"total benchmarked wall time: {bench['seconds'].sum():.1f} s")
    thr = measured_throughput(led)
    proj = paper_projection(led)
    print(f"assumptions: A100 peak {A100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16, MFU {ASSUMED_MFU:.0%}; FLOPs per "
          "training token from flow/cost.py (analytic), tokens per sample from the paper profile's curriculum")
    if thr:
        print(f"measured on {thr['device']}: {thr['tokens_per_device_second']:,.1f} tokens/s, "
              f"{thr['flops_per_device_second'] / 1e9:,.2f} GFLOP/s per device")
    _print(f"Projection of the paper profile (analytic FLOPs at {ASSUMED_MFU:.0%} MFU of "
           f"{A100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16)", proj)
    total = implied_mfu(proj["train_flops"].sum(), proj["paper_a100_hours"].sum())
    print(f"the paper's hours imply {total:.1%} utilisation of the A100's bf16 peak under this FLOP model "
          f"(per stage: {', '.join(f'{r.stage} {r.implied_mfu:.1%}' for r in proj.itertuples())})")
    measured = measured_mfu(performance_file(cfg))
    print("measured MFU of paper-size training: " + (", ".join(f"{m['experiment']} {m['mfu']:.1%} on {m['device']}"
                                                               for m in measured)
                                                     or f"not measured on a GPU yet ({MEASURE_MFU})"))
    print(f"wrote {render_gpu_hours(cfg, led, proj, measured=measured)}")
    return 0
