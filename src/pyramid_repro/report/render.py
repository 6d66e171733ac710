"""`pyramid-repro report`: render every report its inputs allow into reports/.

* table1.{pdf,csv,md}: the paper's Table 1 rows, then one row per experiment and backend of this run, read from
  results/<profile>/<experiment>/metrics/<backend>.json. Our rows name their backend; offline proxies are in their
  own section with a footnote, never in the same column as a VBench number without the label.
* table5.pdf: the 16 VBench dimensions, paper vs ours where a backend measured them.
* fid_convergence.pdf: FID vs training samples and vs FLOPs per experiment, with the measured speed-up of the
  pyramid over the full-sequence baseline set against the paper's "about 3x".
* ablations.pdf: one row per experiment with its deltas to `pyramid`, plus sample frames.
* gpu_hours.{pdf,csv}: the audit (report/audit.py).
Every report states profile, config hash, commit and date.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pyramid_repro.cliutil import add_config_args, config_from_args
from pyramid_repro.config import Config
from pyramid_repro.experiments import experiments
from pyramid_repro.provenance import git_commit, utc_now
from pyramid_repro.report.paper import load_paper_table

PAPER_SPEEDUP = 3.0  # PAPER.md section 7: FID converges about 3x faster with the spatial pyramid


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def footer(cfg: Config) -> str:
    return (f"profile {cfg.profile} | config {cfg.config_hash()} | commit {git_commit()[:10]} | "
            f"rendered {utc_now()}")


def load_metrics(cfg: Config) -> list[dict]:
    """Every metrics JSON of this profile's experiments, in experiments.yaml order."""
    out = []
    for name in experiments():
        for f in sorted(cfg.results_dir(name, "metrics").glob("*.json")):
            d = json.loads(f.read_text())
            missing = [k for k in ("backend", "label", "experiment") if k not in d]
            if missing:
                raise ValueError(f"{f}: metrics JSON lacks {missing}")
            d["_path"] = str(f)
            out.append(d)
    return out


def table1_frame(cfg: Config, metrics: list[dict]) -> pd.DataFrame:
    """Paper rows then ours (one per experiment and backend with an aggregate or FID)."""
    paper = load_paper_table("table1")
    rows = [{"section": "paper (VBench)", "model": r.model, "backend": "vbench (paper)", "total": r.total,
             "quality": r.quality, "semantic": r.semantic, "motion_smoothness": r.motion_smoothness,
             "dynamic_degree": r.dynamic_degree, "fid": np.nan, "n_videos": np.nan, "source": r.source}
            for r in paper.itertuples()]
    for m in metrics:
        agg, dims = m.get("aggregate") or {}, m.get("dimensions") or {}
        pct = lambda k: 100.0 * dims[k] if k in dims else np.nan  # noqa: E731
        rows.append({"section": f"this run: {m['label']}", "model": m["experiment"], "backend": m["backend"],
                     "total": agg.get("total", np.nan), "quality": agg.get("quality", np.nan),
                     "semantic": agg.get("semantic", np.nan), "motion_smoothness": pct("motion_smoothness"),
                     "dynamic_degree": pct("dynamic_degree"),
                     "fid": m["fid"] if m.get("fid") is not None else np.nan, "n_videos": m.get("n_videos"),
                     "source": m["_path"]})
    return pd.DataFrame(rows)


def _draw_table(df: pd.DataFrame, title: str, path: Path, note: str, foot: str) -> None:
    plt = _plt()
    shown = df.copy()
    for c in shown.columns:
        if shown[c].dtype.kind == "f":
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    fig_h = 1.6 + 0.28 * (len(shown) + 1)
    fig, ax = plt.subplots(figsize=(13, fig_h))
    ax.axis("off")
    t = ax.table(cellText=shown.values, colLabels=list(shown.columns), loc="upper center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    t.auto_set_column_width(list(range(len(shown.columns))))
    ax.set_title(title, fontsize=11)
    fig.text(0.01, 0.02, note + "\n" + foot, fontsize=6.5, va="bottom")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def render_table1(cfg: Config, out: Path) -> Path:
    metrics = load_metrics(cfg)
    df = table1_frame(cfg, metrics)
    df.to_csv(out / "table1.csv", index=False)
    ours = df[~df["section"].str.startswith("paper")]
    note = ("Paper rows: VBench, Table 1 of arXiv 2410.05954. " + (
        "This run has no metrics yet: only the paper's rows are shown." if ours.empty else
        "Rows of this run carry their backend: 'synthetic proxy (not VBench)' numbers are VBench-style aggregates "
        "over the synthetic world's dimensions (missing dimensions listed in the metrics JSON), not VBench; "
        "FID rows are probe-feature FIDs (offline), not Inception FID."))
    md = [f"# Table 1 — {footer(cfg)}", "", note, "", df.drop(columns=["source"]).to_markdown(index=False)
          if _has_tabulate() else df.drop(columns=["source"]).to_string(index=False)]
    (out / "table1.md").write_text("\n".join(md) + "\n")
    cols = ["section", "model", "backend", "total", "quality", "semantic", "motion_smoothness", "dynamic_degree",
            "fid", "n_videos"]
    _draw_table(df[cols], "Table 1: paper (VBench) and this run (backend named per row)", out / "table1.pdf",
                note, footer(cfg))
    return out / "table1.pdf"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


def render_table5(cfg: Config, out: Path) -> Path:
    t5 = load_paper_table("table5").rename(columns={"score": "paper"})
    for m in load_metrics(cfg):
        if m.get("dimensions"):
            t5[f"{m['experiment']} ({m['backend']})"] = t5["dimension"].map(
                lambda d: 100.0 * m["dimensions"][d] if d in m["dimensions"] else np.nan)
    t5.drop(columns=["source"]).to_csv(out / "table5.csv", index=False)
    _draw_table(t5.drop(columns=["source"]), "Table 5: VBench dimensions, paper vs this run (percent)",
                out / "table5.pdf", "Columns of this run name experiment and backend; 'synthetic' = proxy, not VBench.",
                footer(cfg))
    return out / "table5.pdf"


def smooth(y: np.ndarray, k: int = 3) -> np.ndarray:
    """Running minimum of a centred moving average: a monotone 'best FID so far' curve."""
    if len(y) == 0:
        return y
    k = max(1, min(k, len(y)))
    ma = np.convolve(np.pad(y, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")
    return np.minimum.accumulate(ma)


def first_crossing(x: np.ndarray, fid: np.ndarray, target: float) -> float | None:
    """Smallest x at which the smoothed FID reaches `target` (linear interpolation), or None if never."""
    s = smooth(np.asarray(fid, dtype=float))
    idx = np.nonzero(s <= target)[0]
    if len(idx) == 0:
        return None
    i = idx[0]
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], s[i - 1], s[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)


def convergence_speedup(base_x, base_fid, pyr_x, pyr_fid) -> dict:
    """Speed-up = compute the baseline needs to reach a common target FID / compute the pyramid needs. Target =
    the worse of the two curves' best smoothed FIDs, so both reach it if they reach anything."""
    if len(base_fid) == 0 or len(pyr_fid) == 0:
        return {"target": None, "speedup": None, "reason": "missing curve"}
    target = max(smooth(np.asarray(base_fid, float))[-1], smooth(np.asarray(pyr_fid, float))[-1])
    xb = first_crossing(np.asarray(base_x, float), base_fid, target)
    xp = first_crossing(np.asarray(pyr_x, float), pyr_fid, target)
    if xb is None or xp is None or xp <= 0:
        return {"target": target, "speedup": None, "reason": "not reached"}
    return {"target": target, "speedup": xb / xp, "baseline_x": xb, "pyramid_x": xp}


def render_fid(cfg: Config, out: Path) -> Path | None:
    curves = {}
    for name in experiments():
        f = cfg.results_dir(name, "fid_curve.csv")
        if f.is_file():
            df = pd.read_csv(f)
            if len(df):
                curves[name] = df
    if not curves:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, df in curves.items():
        for ax, col in zip(axes, ("samples_seen", "flops")):
            ax.plot(df[col], df["fid"], marker="o", ms=3, label=name, lw=2 if name in ("pyramid", "fullseq") else 1)
    axes[0].set_xlabel("training samples seen")
    axes[1].set_xlabel("training FLOPs (analytic)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("probe FID of generated first frames (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    lines = []
    if "pyramid" in curves and "fullseq" in curves:
        for col in ("samples_seen", "flops"):
            r = convergence_speedup(curves["fullseq"][col], curves["fullseq"]["fid"], curves["pyramid"][col],
                                    curves["pyramid"]["fid"])
            sp = "not reached" if r["speedup"] is None else f"{r['speedup']:.2f}x"
            lines.append(f"measured speed-up to FID {r['target']:.2f} in {col}: {sp} (paper: about {PAPER_SPEEDUP:.0f}x)")
    fig.suptitle("FID convergence: spatial pyramid vs full-sequence flow matching (fid-probe, offline proxy)")
    fig.text(0.01, 0.01, "\n".join(lines + [footer(cfg)]), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(out / "fid_convergence.pdf")
    plt.close(fig)
    (out / "fid_convergence.txt").write_text("\n".join(lines) + "\n")
    return out / "fid_convergence.pdf"


def render_ablations(cfg: Config, out: Path) -> Path | None:
    metrics = load_metrics(cfg)
    if not metrics:
        return None
    rows = {}
    for m in metrics:
        r = rows.setdefault(m["experiment"], {"experiment": m["experiment"]})
        if m.get("aggregate"):
            r[f"total ({m['backend']})"] = m["aggregate"].get("total")
        if m.get("fid") is not None:
            r[f"FID ({m['backend']})"] = m["fid"]
    df = pd.DataFrame(list(rows.values()))
    if "pyramid" in rows:
        base = df[df["experiment"] == "pyramid"].iloc[0]
        for c in [c for c in df.columns if c != "experiment"]:
            df[f"Δ {c}"] = df[c] - base[c]
    df.to_csv(out / "ablations.csv", index=False)
    plt = _plt()
    from PIL import Image

    sheets = [(n, cfg.results_dir(n, "samples", cfg.eval.suite, "contact_sheet.png")) for n in rows]
    sheets = [(n, p) for n, p in sheets if p.is_file()]
    fig = plt.figure(figsize=(13, 2.0 + 0.3 * len(df) + 2.6 * len(sheets)))
    gs = fig.add_gridspec(1 + len(sheets), 1, height_ratios=[1.2] + [2.6] * len(sheets))
    ax = fig.add_subplot(gs[0])
    ax.axis("off")
    shown = df.copy()
    for c in shown.columns[1:]:
        shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:+.2f}" if str(c).startswith("Δ") else f"{v:.2f}")
    t = ax.table(cellText=shown.values, colLabels=list(shown.columns), loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(7)
    ax.set_title("Ablations: metrics and deltas to `pyramid` (synthetic proxy / probe FID, offline)")
    for i, (n, p) in enumerate(sheets, 1):
        a = fig.add_subplot(gs[i])
        a.imshow(Image.open(p))
        a.axis("off")
        a.set_title(f"{n}: samples over time", fontsize=8)
    fig.text(0.01, 0.005, footer(cfg), fontsize=7)
    fig.savefig(out / "ablations.pdf", bbox_inches="tight")
    plt.close(fig)
    return out / "ablations.pdf"


def render_gpu_hours(cfg: Config, ledger: pd.DataFrame | None = None, projection: pd.DataFrame | None = None,
                     out: Path | None = None) -> Path:
    from pyramid_repro.report import audit

    out = out or Path(cfg.reports)
    out.mkdir(parents=True, exist_ok=True)
    ledger = audit.ledger_summary(cfg) if ledger is None else ledger
    projection = audit.paper_projection(ledger) if projection is None else projection
    paper = audit.paper_table()
    ledger.to_csv(out / "gpu_hours.csv", index=False)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    axes[0].bar([f"stage {s}" for s in paper["stage"]], paper["computed_a100_hours"], label="Table 4 (128 A100 x h)")
    axes[0].bar([f"stage {i + 1}" for i in range(len(projection))], projection["projected_a100_hours"], alpha=0.6,
                label=f"analytic projection ({audit.ASSUMED_MFU:.0%} MFU)")
    axes[0].set_ylabel("A100-hours")
    axes[0].set_title(f"Paper: {paper['computed_a100_hours'].sum():,.0f} A100-hours (claim 20.7k; VAE excluded)")
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


def render_all(cfg: Config, out: Path | None = None) -> list[Path]:
    out = Path(out or cfg.reports)
    out.mkdir(parents=True, exist_ok=True)
    made = [render_table1(cfg, out), render_table5(cfg, out), render_fid(cfg, out), render_ablations(cfg, out),
            render_gpu_hours(cfg, out=out)]
    return [p for p in made if p is not None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyramid-repro report",
                                 description="Render every report the results allow: table1/table5 (.pdf/.csv/.md), "
                                 "fid_convergence.pdf, ablations.pdf, gpu_hours.pdf.")
    add_config_args(ap)
    ap.add_argument("--out", type=Path, help="reports folder (default: config 'reports')")
    args = ap.parse_args(argv)
    for p in render_all(config_from_args(args), args.out):
        print(f"wrote {p}")
    return 0
