"""`pyramid-repro audit`: the GPU-hour audit (DESIGN.md "Provenance and accounting").

Sets the paper's own arithmetic (Table 4: 128 A100 x (12 + 90 + 60) h = 20,736 A100-hours; VAE excluded, about
3 days on 32 A100s = 2,304 shown apart; Open-Sora 1.2's >40k) against this run's ledgers (one row per training job
and stage) and Snakemake benchmark files, and projects the paper profile's cost from this run's measured
throughput and the analytic FLOPs (flow/cost.py). `--paper` needs no run.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import pandas as pd

from pyramid_repro.cliutil import add_config_args, config_from_args
from pyramid_repro.config import Config, load_config
from pyramid_repro.report.paper import load_paper_table, paper_a100_hours

A100_BF16_PEAK = 312e12  # FLOP/s
ASSUMED_MFU = 0.35  # model FLOPs utilisation assumed for the projection (stated in every output)


def paper_table() -> pd.DataFrame:
    t4 = load_paper_table("table4")
    t4["computed_a100_hours"] = t4["gpus"] * t4["hours"]
    return t4[["stage", "data", "steps", "batch", "hours", "gpus", "a100_hours", "computed_a100_hours"]]


def ledger_summary(cfg: Config) -> pd.DataFrame:
    from pyramid_repro.train.ledger import read_ledgers

    df = read_ledgers(str(cfg.results_dir() / "**" / "ledger*.csv"))
    if df.empty:
        return df
    g = df.groupby(["experiment", "stage", "device_name"], as_index=False)
    return g.agg(jobs=("wall_seconds", "size"), wall_seconds=("wall_seconds", "sum"),
                 device_hours=("device_hours", "sum"), steps=("steps", "sum"), samples=("samples", "sum"),
                 tokens=("tokens", "sum"), flops=("flops", "sum"))


def benchmark_summary(cfg: Config) -> pd.DataFrame:
    rows = []
    for f in sorted(glob.glob(str(cfg.results_dir("benchmarks") / "*.tsv"))):
        b = pd.read_csv(f, sep="\t")
        rows.append({"rule": Path(f).stem, "seconds": float(b["s"].sum()), "max_rss_mb": float(b["max_rss"].max())})
    return pd.DataFrame(rows)


def paper_projection(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper profile's training FLOPs per stage (analytic, from its curriculum and the token accounting) and
    the A100-hours they need at the assumed MFU, beside Table 4."""
    from pyramid_repro.flow import cost

    paper = load_config("paper")
    rows = []
    for st, t4 in zip(paper.train.curriculum, paper_table().itertuples()):
        s, p = paper.vae.spatial_compression, paper.model.patch_size
        h, w = st.height // s, st.width // s
        n = cost.latent_frames(st.frames, paper.vae.temporal_compression)
        toks = cost.expected_training_tokens(h, w, p, n, paper.pyramid.stages, paper.pyramid.stage_weights)
        toks += paper.text_encoder.max_tokens
        flops = cost.training_flops(toks, paper.model.depth, paper.model.hidden_size) * st.steps * st.batch_size
        rows.append({"stage": st.name, "tokens_per_sample": toks, "train_flops": flops,
                     "projected_a100_hours": flops / (A100_BF16_PEAK * ASSUMED_MFU) / 3600.0,
                     "paper_a100_hours": t4.a100_hours})
    return pd.DataFrame(rows)


def _print(title: str, df: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right")
    for r in df.itertuples(index=False):
        t.add_row(*[f"{v:,.4g}" if isinstance(v, float) else str(v) for v in r])
    Console(width=160).print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyramid-repro audit",
                                 description="GPU-hour audit: the paper's Table 4 arithmetic vs the 20.7k claim, this "
                                 "run's ledgers and benchmarks, and a projection of the paper profile's cost.")
    add_config_args(ap)
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
        print(f"no ledgers under {cfg.results_dir()} yet (train something first)")
    else:
        _print(f"This run (profile {cfg.profile}): ledger per experiment and stage", led)
        print(f"total device-hours of this run: {led['device_hours'].sum():.4f}")
    proj = paper_projection(led)
    _print(f"Projection of the paper profile (analytic FLOPs at {ASSUMED_MFU:.0%} MFU of "
           f"{A100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16)", proj)
    from pyramid_repro.report.render import render_gpu_hours

    print(f"wrote {render_gpu_hours(cfg, led, proj)}")
    return 0
