"""`pyramid-repro audit`: the GPU-hour audit (docs/design.md §3).

Sets the paper's own arithmetic (Table 4: 128 A100 x (12 + 90 + 60) h = 20,736 A100-hours; VAE excluded, about
3 days on 32 A100s = 2,304 shown apart; Open-Sora 1.2's >40k) against this run's ledgers (one row per training job
and stage) and Snakemake benchmark files, and projects the paper profile's cost from this run's measured
throughput and the analytic FLOPs (flow/cost.py). `--paper` needs no run.

Its command line (options, messages) is commands/audit.py.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pandas as pd

from pyramid_repro.config import Config, load_config
from pyramid_repro.flow.cost import A100_BF16_PEAK, expected_sample_flops, expected_sample_tokens
from pyramid_repro.report.paper import load_paper_table, paper_a100_hours
from pyramid_repro.report.style import _plt, footer
from pyramid_repro.train.ledger import FINETUNE, PRETRAIN, read_ledgers, row_kinds

ASSUMED_MFU = 0.35  # model FLOPs utilisation assumed for the projection (stated in every output)


def paper_table() -> pd.DataFrame:
    t4 = load_paper_table("table4")
    t4["computed_a100_hours"] = t4["gpus"] * t4["hours"]
    return t4[["stage", "data", "steps", "batch", "hours", "gpus", "a100_hours", "computed_a100_hours"]]


def read_ledger_rows(cfg: Config) -> pd.DataFrame:
    """Every ledger row of this profile (results/<profile>/**/ledger*.csv: the VAE's and each DiT stage's)."""
    return read_ledgers(cfg.layout.ledger_glob())


def summarise_ledger(df: pd.DataFrame) -> pd.DataFrame:
    """Ledger rows summed per experiment, stage, device type and kind (pretraining or fine-tuning a release: the
    paper's 20.7k A100-hours are pretraining); jobs = rows, i.e. resumed jobs count apart."""
    if df.empty:
        return pd.DataFrame(columns=["experiment", "stage", "device_name", "kind", "jobs", "wall_seconds",
                                     "device_hours", "steps", "samples", "tokens", "flops"])
    missing = {"experiment", "stage", "device_name", "wall_seconds", "device_hours"} - set(df.columns)
    if missing:
        raise ValueError(f"ledger CSV lacks columns {sorted(missing)} (see train/ledger.py LEDGER_FIELDS)")
    df = df.copy()
    df["kind"] = row_kinds(df)
    for c in ("steps", "samples", "tokens", "flops"):
        df[c] = pd.to_numeric(df.get(c, 0), errors="coerce").fillna(0)
    g = df.groupby(["experiment", "stage", "device_name", "kind"], as_index=False, sort=False)
    return g.agg(jobs=("wall_seconds", "size"), wall_seconds=("wall_seconds", "sum"),
                 device_hours=("device_hours", "sum"), steps=("steps", "sum"), samples=("samples", "sum"),
                 tokens=("tokens", "sum"), flops=("flops", "sum"))


KIND_LABELS = {PRETRAIN: "pretraining (from scratch; what the paper's 20.7k A100-hours are)",
               FINETUNE: "fine-tuning a release"}


def kind_hours(summary: pd.DataFrame) -> dict[str, float]:
    """Device-hours of a ledger summary per kind, pretraining and fine-tuning apart (KIND_LABELS)."""
    kinds = summary["kind"] if "kind" in summary.columns else pd.Series(PRETRAIN, index=summary.index)
    return {label: float(summary.loc[kinds == k, "device_hours"].sum()) for k, label in KIND_LABELS.items()}


def ledger_summary(cfg: Config) -> pd.DataFrame:
    """This run's ledger summed per experiment, stage and device type."""
    return summarise_ledger(read_ledger_rows(cfg))


def measured_throughput(summary: pd.DataFrame) -> dict:
    """Tokens and FLOPs per device-second over the DiT pretraining jobs of this run (rows with tokens > 0; the VAE
    has none; a fine-tuning row's FLOPs are counted with the profile's model.*, not the release's architecture).
    Returns {} when nothing was measured."""
    if summary.empty:
        return {}
    pre = summary["kind"] != FINETUNE if "kind" in summary.columns else True
    dit = summary[(summary["tokens"] > 0) & (summary["device_hours"] > 0) & pre]
    if dit.empty:
        return {}
    secs = float(dit["device_hours"].sum()) * 3600.0
    return {"device": ", ".join(sorted(set(map(str, dit["device_name"])))), "device_seconds": secs,
            "tokens_per_device_second": float(dit["tokens"].sum()) / secs,
            "flops_per_device_second": float(dit["flops"].sum()) / secs}


def benchmark_summary(cfg: Config) -> pd.DataFrame:
    """Snakemake benchmark files (results/<profile>/benchmarks/*.tsv: s, h:m:s, max_rss, ...): one row per rule
    job with its wall seconds, CPU seconds and peak memory. A training run k >= 1 (train.seeds) names its files
    after its run name (train_dit_pyramid/seed_1_image.tsv), one folder down: the job is the path below benchmarks/."""
    rows = []
    root = cfg.layout.benchmarks()
    for f in sorted(glob.glob(str(cfg.layout.benchmarks("**", "*.tsv")), recursive=True)):
        b = pd.read_csv(f, sep="\t")
        if "s" not in b.columns:
            raise ValueError(f"{f}: not a Snakemake benchmark file (no 's' column; columns {list(b.columns)})")
        rows.append({"job": Path(f).relative_to(root).with_suffix("").as_posix(), "seconds": float(b["s"].sum()),
                     "cpu_seconds": float(pd.to_numeric(b.get("cpu_time", 0), errors="coerce").fillna(0).sum()),
                     "max_rss_mb": float(pd.to_numeric(b.get("max_rss", 0), errors="coerce").fillna(0).max())})
    return pd.DataFrame(rows, columns=["job", "seconds", "cpu_seconds", "max_rss_mb"])


def paper_projection(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper profile's training FLOPs per stage (its curriculum x the trainer's expected FLOPs per sample,
    flow/cost.expected_sample_flops, the same accounting the ledger's FLOPs come from) and the A100-hours they
    need at the assumed MFU, beside Table 4; with this run's measured FLOP/s per device (from `summary`, a ledger
    summary) also the device-hours the paper profile would take on this run's device."""
    paper = load_config("paper")
    thr = measured_throughput(summary)
    rows = []
    for st, t4 in zip(paper.train.curriculum, paper_table().itertuples()):
        flops = expected_sample_flops(paper, st) * st.steps * st.batch_size
        row = {"stage": st.name, "tokens_per_sample": expected_sample_tokens(paper, st), "train_flops": flops,
               "projected_a100_hours": flops / (A100_BF16_PEAK * ASSUMED_MFU) / 3600.0,
               "paper_a100_hours": t4.a100_hours, "implied_mfu": implied_mfu(flops, t4.a100_hours)}
        if thr:
            row["projected_hours_on_this_device"] = flops / thr["flops_per_device_second"] / 3600.0
        rows.append(row)
    return pd.DataFrame(rows)


def implied_mfu(train_flops: float, a100_hours: float) -> float:
    """The utilisation the paper's hours imply under this suite's FLOP model: analytic training FLOPs / (A100-hours
    x 3600 x the A100's bf16 peak). Low values mean the paper spent more than the model of its trainer needs
    (more tokens per sample than one learnt frame, or idle GPUs), high ones the reverse."""
    return float(train_flops) / (float(a100_hours) * 3600.0 * A100_BF16_PEAK)


MEASURE_MFU = "python benchmarks/pyramid_vs_fullseq.py --device cuda"


def performance_file(cfg: Config) -> Path:
    """Where `benchmarks/pyramid_vs_fullseq.py` leaves its numbers (reports/performance.json beside its .md)."""
    return Path(cfg.reports) / "performance.json"


def measured_mfu(path: Path) -> list[dict]:
    """Model FLOPs utilisation of paper-size training measured on a GPU by the benchmark's section (e): one
    {experiment, device, mfu} per experiment (fullseq, pyramid); [] when the file is missing or has no GPU
    section (a CPU run of the benchmark measures no MFU)."""
    if not Path(path).exists():
        return []
    data = json.loads(Path(path).read_text())
    train = data.get("paper_training") or {}
    return [{"experiment": e, "device": data.get("device", "?"), "mfu": r["mfu"]}
            for e, r in train.items() if r.get("mfu") is not None]


def audit_frame(paper: pd.DataFrame, ledger: pd.DataFrame, projection: pd.DataFrame,
                benchmarks: pd.DataFrame, measured: list[dict] = ()) -> pd.DataFrame:
    """The whole audit as one long CSV: section, item, quantity, value, unit."""
    pa = paper_a100_hours()
    rows = [("paper Table 4", f"stage {r.stage} ({r.data})", "A100-hours", float(r.gpus * r.hours), "A100-h")
            for r in paper.itertuples()]
    rows += [("paper Table 4", "total (128 A100 x (12 + 90 + 60) h)", "A100-hours", pa["total"], "A100-h"),
             ("paper claim", "20.7k A100 GPU hours", "A100-hours", pa["claim"], "A100-h"),
             ("paper, excluded", "VAE: about 3 days on 32 A100", "A100-hours", pa["vae_a100_hours_estimate"],
              "A100-h"),
             ("baseline claim", "Open-Sora 1.2 (more than)", "GPU-hours", pa["open_sora_1_2_claim"], "GPU-h")]
    for r in ledger.itertuples():
        item = f"{r.experiment}/{r.stage} [{r.device_name}]" + (" fine-tuning" if r.kind == FINETUNE else "")
        rows += [("this run (ledger)", item, "device_hours", float(r.device_hours), "device-h"),
                 ("this run (ledger)", item, "wall_seconds", float(r.wall_seconds), "s"),
                 ("this run (ledger)", item, "tokens", float(r.tokens), "tokens"),
                 ("this run (ledger)", item, "tokens_per_device_second",
                  float(r.tokens) / (float(r.device_hours) * 3600.0) if r.device_hours > 0 else 0.0, "tokens/s"),
                 ("this run (ledger)", item, "flops", float(r.flops), "FLOP")]
    if not ledger.empty:
        rows.append(("this run (ledger)", "total", "device_hours", float(ledger["device_hours"].sum()), "device-h"))
        rows += [("this run (ledger)", label, "device_hours", hours, "device-h")
                 for label, hours in kind_hours(ledger).items()]
    for r in benchmarks.itertuples():
        rows += [("this run (Snakemake benchmarks)", r.job, "seconds", r.seconds, "s"),
                 ("this run (Snakemake benchmarks)", r.job, "max_rss_mb", r.max_rss_mb, "MB")]
    if len(projection):
        rows.append(("paper's implied utilisation", "all stages", "analytic FLOPs / (Table 4 A100-hours x peak)",
                     implied_mfu(projection["train_flops"].sum(), projection["paper_a100_hours"].sum()), "fraction"))
    # beside the paper's implied utilisation: what paper-size training reaches here (benchmark section (e))
    for m in measured:
        rows.append(("measured utilisation (benchmark e)", f"{m['experiment']} on {m['device']}",
                     "MFU of the GPU's dense bf16 peak", float(m["mfu"]), "fraction"))
    if not measured:
        rows.append(("measured utilisation (benchmark e)", f"not measured on a GPU yet: {MEASURE_MFU}",
                     "MFU of the GPU's dense bf16 peak", float("nan"), "fraction"))
    for r in projection.itertuples():
        rows.append(("projection (paper profile)", r.stage, f"A100-hours at {ASSUMED_MFU:.0%} MFU of "
                     f"{A100_BF16_PEAK / 1e12:.0f} TFLOP/s", float(r.projected_a100_hours), "A100-h"))
        rows.append(("paper's implied utilisation", r.stage, "analytic FLOPs / (Table 4 A100-hours x peak)",
                     float(r.implied_mfu), "fraction"))
        if hasattr(r, "projected_hours_on_this_device"):
            rows.append(("projection (paper profile)", r.stage, "device-hours at this run's measured FLOP/s",
                         float(r.projected_hours_on_this_device), "device-h"))
    return pd.DataFrame(rows, columns=["section", "item", "quantity", "value", "unit"])


def render_gpu_hours(cfg: Config, ledger: pd.DataFrame | None = None, projection: pd.DataFrame | None = None,
                     out: Path | None = None, measured: list[dict] | None = None) -> Path:
    """gpu_hours.csv (`audit_frame`) and gpu_hours.pdf: the paper's A100-hours per stage beside the analytic
    projection, and this run's device-seconds per experiment and stage."""
    out = out or cfg.layout.reports
    out.mkdir(parents=True, exist_ok=True)
    ledger = ledger_summary(cfg) if ledger is None else ledger
    projection = paper_projection(ledger) if projection is None else projection
    paper = paper_table()
    measured = measured_mfu(performance_file(cfg)) if measured is None else measured
    audit_frame(paper, ledger, projection, benchmark_summary(cfg), measured).to_csv(
        out / "gpu_hours.csv", index=False)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    pa = paper_a100_hours()
    names = [f"stage {s}" for s in paper["stage"]] + ["total", "VAE (excl.)", "Open-Sora 1.2"]
    vals = list(paper["computed_a100_hours"]) + [pa["total"], pa["vae_a100_hours_estimate"],
                                                 pa["open_sora_1_2_claim"]]
    bars = axes[0].bar(names, vals, color=["C0"] * 3 + ["C2", "C7", "C3"], label="paper (Table 4 / text)")
    axes[0].bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize=7)
    axes[0].bar([f"stage {i + 1}" for i in range(len(projection))], projection["projected_a100_hours"], alpha=0.5,
                color="C1", width=0.4, label=f"analytic projection ({ASSUMED_MFU:.0%} MFU)")
    axes[0].axhline(pa["claim"], color="k", ls=":", lw=1, label="claim: 20.7k")
    axes[0].set_ylabel("A100-hours")
    axes[0].tick_params(axis="x", labelsize=8)
    implied = implied_mfu(projection["train_flops"].sum(), projection["paper_a100_hours"].sum()) \
        if {"train_flops", "paper_a100_hours"} <= set(projection.columns) and len(projection) else None
    here = ", ".join(f"{m['experiment']} {m['mfu']:.0%}" for m in measured)
    here = f"measured here: {here} on {measured[0]['device']}" if measured else "not yet measured on a GPU"
    axes[0].set_title(f"Paper: 128 A100 x (12+90+60) h = {pa['total']:,.0f} A100-hours"
                      + (f"\n(implies {implied:.0%} of the A100's bf16 peak under this suite's FLOP model;\n"
                         f"paper-size training MFU {here})" if implied else ""), fontsize=10)
    axes[0].legend(fontsize=7)
    if not ledger.empty:
        lab = ledger["experiment"] + "/" + ledger["stage"]
        axes[1].barh(lab, ledger["device_hours"] * 3600.0)
        axes[1].set_xlabel(f"device-seconds ({', '.join(sorted(set(ledger['device_name'])))})")
        axes[1].set_title(f"This run ({cfg.profile}): {ledger['device_hours'].sum() * 3600:.0f} device-seconds")
    else:
        axes[1].axis("off")
        axes[1].text(0.1, 0.5, "no training ledgers yet")
    fig.text(0.01, 0.01, footer(cfg), fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out / "gpu_hours.pdf")
    plt.close(fig)
    return out / "gpu_hours.pdf"
