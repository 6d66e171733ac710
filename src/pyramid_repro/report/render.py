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

Its command line (options, messages) is commands/report.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from pyramid_repro.backend_specs import backends_filling
from pyramid_repro.config import Config, for_experiment
from pyramid_repro.data.video_io import read_image, read_video
from pyramid_repro.eval import uncertainty as uq
from pyramid_repro.eval.backends import FrechetToFixed, real_probe_stats
from pyramid_repro.eval.uncertainty import LEVEL, describe_interval
from pyramid_repro.experiments import experiments, selected_experiments
from pyramid_repro.eval.score import read_units
from pyramid_repro.layout import units_path
from pyramid_repro.provenance import measured_hash
from pyramid_repro.report.convergence import PAPER_SPEEDUP, describe, speedup_table
from pyramid_repro.report.audit import render_gpu_hours
from pyramid_repro.report.claims import (claims_frame, load_claims, paired_feature_fid, paired_video_statistic,
                                         per_video_statistics, plug_in_curves, render_claims, verdict_text,
                                         video_values)
from pyramid_repro.report.paper import load_paper_table
from pyramid_repro.report.style import _plt, footer

def _experiment_order(experiment: str, name: str) -> tuple[int, str]:
    """Sort key: experiments.yaml order, then file name."""
    names = list(experiments())
    return (names.index(experiment) if experiment in names else len(names), name)


def load_metrics(cfg: Config, files: list[Path] | None = None) -> list[dict]:
    """The metrics JSONs `files` (the report rule's inputs) or, without them, every metrics JSON of this profile's
    experiments that exists (layout.metrics); in experiments.yaml order, then by backend file name."""
    if files is None:
        files = [f for name in experiments() for f in cfg.layout.metrics(name, "*").parent.glob("*.json")]
    out = []
    for f in map(Path, files):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: metrics JSON not found (run `pyramid-repro score`)")
        d = json.loads(f.read_text())
        missing = [k for k in ("backend", "label", "experiment") if k not in d]
        if missing:
            raise ValueError(f"{f}: metrics JSON lacks {missing}")
        d["_path"] = str(f)
        out.append(d)
    out.sort(key=lambda d: _experiment_order(d["experiment"], Path(d["_path"]).name))
    return out


def other_backend(m: dict) -> bool:
    """Whether a metrics JSON is of a backend that is neither VBench-like (an aggregate) nor an FID and fills no
    paper table of its own (backend_specs `paper_table`), e.g. a per-video brightness: Tables 1 and 5 have no
    column for it, and the ablations report shows its per-video statistics (`other_statistics`)."""
    filled = m["backend"] in backends_filling("table6")
    return not (m.get("aggregate") or m.get("fid") is not None or filled)


def other_backends_note(metrics: list[dict]) -> str:
    """Where the tables that have no column for them show the other backends' numbers (`other_backend`)."""
    other = sorted({f"{m['backend']} ({m['label']})" for m in metrics if other_backend(m)})
    return (f" Backends with no column here: {'; '.join(other)}; their per-video statistics, each with its "
            "interval and its paired difference to pyramid, are in the ablations report (ablations.pdf/.csv)."
            if other else "")


def table1_frame(cfg: Config, metrics: list[dict]) -> pd.DataFrame:
    """Paper rows then ours (one per experiment and backend with an aggregate or FID; the other backends are in
    the ablations report, `other_backend`)."""
    paper = load_paper_table("table1")
    rows = [{"section": "paper (VBench)", "model": r.model, "backend": "vbench (paper)", "total": r.total,
             "quality": r.quality, "semantic": r.semantic, "motion_smoothness": r.motion_smoothness,
             "dynamic_degree": r.dynamic_degree, "fid": np.nan, "n_videos": np.nan, "source": r.source}
            for r in paper.itertuples()]
    for m in (m for m in metrics if not other_backend(m)):
        agg, dims = m.get("aggregate") or {}, m.get("dimensions") or {}
        pct = lambda k: 100.0 * dims[k] if k in dims else np.nan  # noqa: E731
        row = {"section": f"this run: {m['label']}", "model": m["experiment"], "backend": m["backend"],
               "total": agg.get("total", np.nan), "quality": agg.get("quality", np.nan),
               "semantic": agg.get("semantic", np.nan), "motion_smoothness": pct("motion_smoothness"),
               "dynamic_degree": pct("dynamic_degree"),
               "fid": m["fid"] if m.get("fid") is not None else np.nan, "n_videos": m.get("n_videos"),
               "source": m["_path"]}
        rows.append(row | interval_columns(m))
    df = pd.DataFrame(rows)
    # our rows grouped by backend (one section per backend), experiments in experiments.yaml order within it
    paper_part, ours = df.iloc[:len(paper)], df.iloc[len(paper):]
    ours = ours.sort_values(["backend"], kind="stable")
    return pd.concat([paper_part, ours], ignore_index=True)


INTERVAL_COLUMNS = ("total", "quality", "semantic", "motion_smoothness", "dynamic_degree", "fid")


def interval_columns(m: dict) -> dict[str, float]:
    """<column>_lo / <column>_hi of a metrics JSON's bootstrap intervals (eval/uncertainty.py), in the table's
    units (dimensions in percent); NaN where the backend gives none."""
    iv = m.get("intervals") or {}
    found = {**(iv.get("aggregate") or {}), **{k: [100.0 * v for v in ci] for k, ci in (iv.get("dimensions") or {})
                                               .items()}}
    if iv.get("fid"):
        found["fid"] = iv["fid"]
    out = {}
    for c in INTERVAL_COLUMNS:
        lo, hi = found.get(c) or (np.nan, np.nan)
        out[f"{c}_lo"], out[f"{c}_hi"] = lo, hi
    return out


def with_intervals(df: pd.DataFrame, columns: list[str], digits: int = 1) -> pd.DataFrame:
    """The columns as text 'value [lo, hi]' where the frame has <column>_lo/_hi, for the rendered tables."""
    shown = df[columns].copy()
    for c in columns:
        if f"{c}_lo" not in df.columns:
            continue
        ci = [describe_interval([lo, hi], digits) for lo, hi in zip(df[f"{c}_lo"], df[f"{c}_hi"])]
        shown[c] = [("" if pd.isna(v) else f"{v:.2f}") + (f" {i}" if i else "") for v, i in zip(df[c], ci)]
    return shown


def metrics_provenance(metrics: list[dict], cfg: Config) -> str:
    """A note naming the metrics JSONs measured under another setting than this report's config says their
    experiment has: their `measured_hash` (provenance.MEASURED_SECTIONS: what changes the measurement, not the
    device, the experiments a workflow selects or the paths) against this config resolved for their experiment;
    a JSON from before `measured_hash` is compared on its whole config hash."""
    expected: dict[str, Config | None] = {}
    stale = set()
    for m in metrics:
        e = m["experiment"]
        if e not in expected:
            expected[e] = for_experiment(cfg, e) if e in experiments() else None
        want = expected[e]
        if want is None or m.get("config_hash") is None:
            continue
        got = (m.get("provenance") or {}).get("measured_hash")
        differs = got != measured_hash(want) if got is not None else m["config_hash"] != want.config_hash()
        if differs:
            stale.add(f"{e}/{m['backend']}: config {m.get('config_hash')} commit {str(m.get('commit'))[:10]} "
                      f"({m.get('created_utc')})")
    stale = sorted(stale)
    if not stale:
        return ""
    return "Metrics computed under another config than this report's: " + "; ".join(stale[:6]) + (
        f" and {len(stale) - 6} more" if len(stale) > 6 else "")


def _draw_table(df: pd.DataFrame, title: str, path: Path, note: str, foot: str) -> None:
    plt = _plt()
    shown = df.copy()
    for c in shown.columns:
        if shown[c].dtype.kind == "f":
            whole = shown[c].dropna().map(float.is_integer).all() and c not in ("total", "quality", "semantic")
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.0f}" if whole else f"{v:.2f}")
    fig_h = 1.0 + 0.3 * (len(shown) + 1)
    fig, ax = plt.subplots(figsize=(13, fig_h))
    ax.axis("off")
    t = ax.table(cellText=shown.values, colLabels=list(shown.columns), loc="upper center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1.0, 1.25)
    t.auto_set_column_width(list(range(len(shown.columns))))
    ax.set_title(title, fontsize=11)

    ax.text(0.0, 0.0, "\n".join(textwrap.wrap(note, 170) + [foot]), fontsize=7, va="top",
            transform=ax.transAxes)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def render_table1(cfg: Config, out: Path, metrics: list[dict] | None = None) -> Path:
    metrics = load_metrics(cfg) if metrics is None else metrics
    df = table1_frame(cfg, metrics)
    df.to_csv(out / "table1.csv", index=False)
    ours = df[~df["section"].str.startswith("paper")]
    labels = {m["backend"]: m["label"] for m in metrics}
    note = ("Paper rows: VBench, Table 1 of arXiv 2410.05954v2. " + (
        "This run has no metrics yet: only the paper's rows are shown." if ours.empty else
        "Rows of this run name their backend; only backend 'vbench' is a VBench number. Backends: "
        + "; ".join(f"{b} = {lab}" for b, lab in sorted(labels.items()))
        + ". Proxy aggregates are VBench-style over the dimensions the backend measures (missing ones listed in "
        "the metrics JSON)."))
    if any(m.get("intervals") for m in metrics):
        note += (f" Intervals [lo, hi]: {LEVEL:.0%} bootstrap intervals over the generated videos, resampled prompt "
                 "by prompt (percentile for the proxy scores, basic for FID); see the metrics JSONs' `interval`.")
    note += other_backends_note(metrics)
    prov = metrics_provenance(metrics, cfg)
    note += (" " + prov) if prov else ""
    md = [f"# Table 1 — {footer(cfg)}", "", note, "", df.drop(columns=["source"]).to_markdown(index=False)
          if _has_tabulate() else df.drop(columns=["source"]).to_string(index=False)]
    (out / "table1.md").write_text("\n".join(md) + "\n")
    cols = ["section", "model", "backend", "total", "quality", "semantic", "motion_smoothness", "dynamic_degree",
            "fid", "n_videos"]
    _draw_table(with_intervals(df, cols), "Table 1: paper (VBench) and this run (backend named per row)",
                out / "table1.pdf", note, footer(cfg))
    return out / "table1.pdf"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


def render_table5(cfg: Config, out: Path, metrics: list[dict] | None = None) -> Path:
    """Table 5: the paper's VBench dimensions and one column per metrics JSON of this run that measured at least
    one of them (a backend with other dimensions only is named in the note: `other_backends_note`)."""
    t5 = load_paper_table("table5").rename(columns={"score": "paper"})
    metrics = load_metrics(cfg) if metrics is None else metrics
    for m in metrics:
        if set(m.get("dimensions") or {}) & set(t5["dimension"]):
            t5[f"{m['experiment']} ({m['backend']})"] = t5["dimension"].map(
                lambda d: 100.0 * m["dimensions"][d] if d in m["dimensions"] else np.nan)
    t5.drop(columns=["source"]).to_csv(out / "table5.csv", index=False)
    _draw_table(t5.drop(columns=["source"]), "Table 5: VBench dimensions, paper vs this run (percent)",
                out / "table5.pdf", "Columns of this run name experiment and backend; 'synthetic' = proxy, not VBench."
                + other_backends_note(metrics), footer(cfg))
    return out / "table5.pdf"


def render_table6(cfg: Config, out: Path, metrics: list[dict] | None = None) -> Path | None:
    """Table 6 (EvalCrafter raw metrics): the paper's column and one per metrics JSON of this run from a backend that
    fills Table 6 (backend_specs: `evalcrafter`; raw metrics read from its `dimensions`, else `extra`); None when
    no EvalCrafter metrics exist."""
    metrics = load_metrics(cfg) if metrics is None else metrics
    table6 = backends_filling("table6")
    ec = [m for m in metrics if m["backend"] in table6]
    if not ec:
        return None
    t6 = load_paper_table("table6").rename(columns={"score": "paper"})
    for m in ec:
        raw = {**(m.get("extra") or {}), **(m.get("dimensions") or {})}
        t6[f"{m['experiment']} ({m['backend']})"] = t6["metric"].map(lambda k: raw.get(k, np.nan))
    t6.drop(columns=["source"]).to_csv(out / "table6.csv", index=False)
    _draw_table(t6.drop(columns=["source"]), "Table 6: EvalCrafter raw metrics, paper vs this run",
                out / "table6.pdf", "Paper: Table 6 of arXiv 2410.05954. Empty cell = metric not measured.",
                footer(cfg))
    return out / "table6.pdf"


def placeholder(path: Path, title: str, message: str, cfg: Config) -> Path:
    """A one-page PDF saying why a report has no content yet (so a workflow target always exists)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.55, message, ha="center", va="center", fontsize=10, wrap=True)
    fig.text(0.01, 0.02, footer(cfg), fontsize=7)
    fig.savefig(path)
    plt.close(fig)
    return path


def load_fid_curves(cfg: Config, files: list[Path] | None = None) -> dict[str, pd.DataFrame]:
    """Non-empty FID curves by experiment: the files `files` (the report rule's inputs) or, without them, every
    experiment's layout.fid_curve that exists."""
    names = list(experiments())
    if files is None:
        files = [cfg.layout.fid_curve(n) for n in names if cfg.layout.fid_curve(n).is_file()]
    curves = {}
    for f in sorted(map(Path, files), key=lambda f: _experiment_order(f.parent.name, f.name)):
        name = f.parent.name  # layout.fid_curve: <results>/<profile>/<experiment>/fid_curve.csv
        df = pd.read_csv(f)
        missing = {"samples_seen", "fid"} - set(df.columns)
        if missing:
            raise ValueError(f"{f}: FID curve lacks columns {sorted(missing)}; expected step, samples_seen, "
                             "tokens_seen, flops, device_hours, fid, backend")
        if len(df):
            curves[name] = df
    return curves


def render_fid(cfg: Config, out: Path, curves: dict[str, pd.DataFrame] | None = None,
               claims: pd.DataFrame | None = None) -> Path:
    """FID vs training samples, FLOPs and device-hours for every trained experiment, with the measured speed-up
    of `pyramid` over `fullseq` (report/convergence.py) beside the paper's "about 3x" (docs/method.md §7), in the
    stage the spatial-pyramid claim reads (replication/claims.yaml: the image stage). The decision is the claims
    report's paired one (`claims`, report/claims.py), quoted here; the bands are each point's own interval."""
    curves = load_fid_curves(cfg) if curves is None else curves
    if not curves:
        message = f"no FID curves yet ({cfg.layout.fid_curve('<experiment>')})"
        pd.DataFrame().to_csv(out / "fid_convergence.csv", index=False)
        (out / "fid_convergence.txt").write_text(message + "\n")
        return placeholder(out / "fid_convergence.pdf", "FID convergence", message, cfg)
    plt = _plt()
    from matplotlib.ticker import NullFormatter

    axes_cols = [c for c in ("samples_seen", "flops", "device_hours") if all(c in d for d in curves.values())]
    # FID is not comparable across stages (an image stage is scored on first frames), so curves that span
    # several stages are compared within the last one only (x stays cumulative: earlier stages' cost counts)
    last = cfg.train.curriculum[-1].name if cfg.train.curriculum else None
    spatial = next((c.stage for c in load_claims() if c.kind == "fid_speedup"), None)
    stages = {s for d in curves.values() for s in d.get("stage", pd.Series([last]))}
    stage = (spatial if spatial in stages else last) if last and len(stages) > 1 else None
    # the speed-up reads the plug-in FIDs of the points' features, as the claims table does (one definition,
    # docs/method.md §11); the plotted points and bands are the bias-corrected FIDs of fid_curve.csv
    plug_in, unreadable = plug_in_curves(cfg, curves, stage)
    table = speedup_table(plug_in, stage=stage)
    lines = []
    table.to_csv(out / "fid_convergence.csv", index=False)
    if table.empty:
        lines.append("speed-up: needs both `pyramid` and `fullseq` FID curves"
                     + (f" with points in stage {stage}" if stage else "") + " and their points' features"
                     + (f" ({'; '.join(unreadable)})" if unreadable else ""))
    else:
        paper = f"   [paper: about {PAPER_SPEEDUP:.0f}x]"
        for (st, ax_name, tgt), grp in table.groupby(["stage", "axis", "target"], sort=False, dropna=False):
            r = grp.iloc[0].to_dict()
            head = f"[{st}] {ax_name:>12}"
            if r["target"] is None or pd.isna(r["target"]):
                lines.append(f"{head}: {r['reason']}")
                continue
            kinds = "/".join(grp["target_kind"])
            overlap = r.get("separated") is False  # marginal bands overlap: no speed-up is read off them
            if overlap or r["speedup"] is None or pd.isna(r["speedup"]):  # or a curve never gets there
                lines.append(f"{head}: FID {r['target']:.2f} ({kinds}) {describe(r)}{paper}")
            else:
                lines.append(f"{head}: fullseq needs {describe(r)} the pyramid's {ax_name} to reach FID "
                             f"{r['target']:.2f} ({kinds}; {r['reason']}){paper}")
    if claims is not None and not claims.empty:
        for r in claims[claims["claim_id"] == "spatial_pyramid"].itertuples():
            lines.append(f"paired decision ({r.statistic}, {r.arm_a} vs {r.arm_b}, captions resampled jointly): "
                         f"{r.display or ''} -> {verdict_text(r.verdict, r.size_verdict)}"
                         + (f" ({r.note})" if r.verdict != "supported" and r.note else ""))
    # the figure's text, wrapped to its width (monospace, 7 pt: about 15 characters per inch)
    width = int(5.2 * len(axes_cols) * 15)
    shown = [w for ln in lines for w in textwrap.wrap(ln, width, subsequent_indent="    ")]
    fig = plt.figure(figsize=(5.2 * len(axes_cols), 5.0 + 0.16 * len(shown)))
    gs = fig.add_gridspec(2, len(axes_cols), height_ratios=[4.2, 0.5 + 0.16 * len(shown)])
    axes = [fig.add_subplot(gs[0, i]) for i in range(len(axes_cols))]
    labels = {"samples_seen": "training samples seen", "flops": "training FLOPs (analytic)",
              "device_hours": "device-hours (ledger clock)"}
    backend = ", ".join(sorted({str(b) for d in curves.values() for b in d.get("backend", pd.Series(["?"]))}))
    for name, df in curves.items():
        main_ = name in ("pyramid", "fullseq")
        band = {"fid_lo", "fid_hi"} <= set(df.columns) and df[["fid_lo", "fid_hi"]].notna().all().all()
        for ax, col in zip(axes, axes_cols):
            line, = ax.plot(df[col], df["fid"], marker="o", ms=3, label=name, lw=2.2 if main_ else 1,
                            ls="-" if main_ else "--", alpha=1.0 if main_ else 0.8)
            if band and main_:  # the ablations' bands would hide the two curves the speed-up compares
                ax.fill_between(df[col], df["fid_lo"], df["fid_hi"], color=line.get_color(), alpha=0.18, lw=0)
    for ax, col in zip(axes, axes_cols):
        ax.set_xlabel(labels[col])
        if col != "samples_seen":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(f"FID ({backend}; lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    text = fig.add_subplot(gs[1, :])
    text.axis("off")
    notes = ["speed-up = x fullseq needs / x pyramid needs to first reach the target on smoothed 'best so far' curves"
             " of the plug-in FIDs of each point's features (the claims table's statistic, its paired interval on the"
             " 'paired decision' lines); target 'common' = worse of the two best FIDs, 'pyramid_best' = best FID the "
             "pyramid reaches",
             f"points and bands: bias-corrected FIDs with their {LEVEL:.0%} bootstrap intervals over the generated "
             "images (shaded for pyramid and fullseq)"]
    if cfg.train.match_compute_to:
        notes.append(f"train.match_compute_to={cfg.train.match_compute_to}: runs get equal FLOPs per stage, not equal "
                     "steps, so compare on the FLOPs and device-hours axes")
    notes = [w for ln in notes for w in textwrap.wrap(ln, width, subsequent_indent="    ")]
    text.text(0, 1, "\n".join(shown + notes + [footer(cfg)]), fontsize=7, family="monospace", va="top")
    fig.suptitle("FID convergence: spatial pyramid vs full-sequence flow matching and ablations")
    fig.tight_layout()
    fig.savefig(out / "fid_convergence.pdf")
    plt.close(fig)
    (out / "fid_convergence.txt").write_text("\n".join(lines) + "\n")
    return out / "fid_convergence.pdf"


def frame_grid(frames: np.ndarray, n: int = 6) -> np.ndarray:
    """n frames evenly spaced over a video (T,H,W,3 uint8) side by side: one row of the ablation grid."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T,H,W,3), got {frames.shape}")
    idx = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
    return np.concatenate(list(frames[idx]), axis=1)


def sample_frames(cfg: Config, experiment: str, videos: int = 3) -> np.ndarray | None:
    """The experiment's contact sheet (samples/<suite>/contact_sheet.png) or, without one, a grid of frames of
    its first sample videos (samples/<suite>/*.mp4); None when it has no samples."""
    d = cfg.layout.samples(experiment, cfg.eval.suite)
    sheet = d / "contact_sheet.png"
    if sheet.is_file():
        return read_image(sheet)
    mp4s = sorted(d.glob("*.mp4"))[:videos]
    if not mp4s:
        return None

    rows = [frame_grid(read_video(f)[0]) for f in mp4s]
    w = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in rows], axis=0)


def not_run(cfg: Config) -> list[str]:
    """The experiments of replication/experiments.yaml that the profile's `experiments` key leaves out."""
    run = selected_experiments(cfg.experiments)
    return [e for e in experiments() if e not in run]


def metrics_units(m: dict) -> dict[str, np.ndarray] | None:
    """The per-video units beside a loaded metrics JSON (metrics/<backend>.units.npz; `score` removes a stale one),
    None when its scoring run predates them."""
    path = units_path(Path(m["_path"]))
    return read_units(path) if path.is_file() else None


def other_statistics(cfg: Config, m: dict) -> dict[str, tuple[float, list[float]]]:
    """An other backend's numbers (`other_backend`) for the ablations table: {column: (mean, [lo, hi])}, one per
    per-video statistic of its units (`claims.per_video_statistics`), the mean over the videos with a value and
    its percentile-bootstrap interval over them resampled prompt by prompt (eval/uncertainty.py); without units its
    `dimensions`, without an interval. Empty for the other kinds of backend."""
    if not other_backend(m):
        return {}
    units = metrics_units(m)
    if units is None:
        return {f"{k} ({m['backend']})": (float(v), [np.nan, np.nan]) for k, v in (m.get("dimensions") or {}).items()
                if isinstance(v, (int, float))}
    out = {}
    for s in per_video_statistics(units):
        values = video_values(units, s)
        keep = np.isfinite(values)
        if not keep.any():
            continue
        v, clusters = values[keep], units["prompt_id"][keep]
        ci = uq.bootstrap(lambda idx, v=v: {"mean": float(v[idx].mean())}, clusters, seed=cfg.seed)["mean"]
        out[f"{s} ({m['backend']})"] = (float(v.mean()), ci)
    return out


def ablation_deltas(cfg: Config, m: dict, base: dict | None) -> dict[str, dict[str, float | bool]]:
    """The paired differences of one experiment's metrics `m` to pyramid's on the same backend (`base`;
    report/claims.py): {column: {"": Δ, " lo", " hi", " p", " p_holm", " paired", " separated"}}. Synthetic: the
    Total and every dimension, Holm-adjusted over them; FID backends: the FID; any other backend (`other_backend`):
    each of its per-video statistics, Holm-adjusted over them. Without units on either side (a run
    scored before they were saved) the marginal difference, not marked as decided."""
    if base is None or m is base:
        return {}
    backend, experiment = m["backend"], m["experiment"]
    ua, ub = metrics_units(m), metrics_units(base)
    col = f"total ({backend})" if m.get("aggregate") else f"FID ({backend})"
    if ua is None or ub is None:
        mine = m["aggregate"].get("total") if m.get("aggregate") else m.get("fid")
        theirs = base["aggregate"].get("total") if base.get("aggregate") else base.get("fid")
        if mine is None or theirs is None:
            return {}
        return {col: {"": mine - theirs, " paired": False, " separated": False}}
    out: dict[str, dict[str, float | bool]] = {}
    if m.get("aggregate"):
        stats = ["total"] + sorted(k[4:] for k in ua if k.startswith("dim/"))
        res = {s: paired_video_statistic(ua, ub, s, experiment, "pyramid", cfg.seed) for s in stats}
        cols = {s: col if s == "total" else f"{s} ({backend})" for s in stats}
    elif backend == "fid-probe":
        res = {"fid": paired_feature_fid(ua, ub, FrechetToFixed(*real_probe_stats(cfg)), experiment, "pyramid",
                                         cfg.seed)}
        cols = {"fid": col}
    elif other_backend(m):
        shared = set(per_video_statistics(ub))
        res = {}
        for s in (s for s in per_video_statistics(ua) if s in shared):
            try:
                res[s] = paired_video_statistic(ua, ub, s, experiment, "pyramid", cfg.seed)
            except ValueError:  # no video has a value in both arms: nothing to pair
                continue
        cols = {s: f"{s} ({backend})" for s in res}
    else:
        return {}
    for (s, r), p_adj in zip(res.items(), uq.holm([r.p_value for r in res.values()])):
        lo, hi = r.interval
        out[cols[s]] = {"": r.estimate, " lo": lo, " hi": hi, " p": r.p_value, " p_holm": p_adj, " paired": True,
                        " separated": bool(p_adj < 0.05 and (lo > 0 or hi < 0))}
    return out


def render_ablations(cfg: Config, out: Path, metrics: list[dict] | None = None) -> Path:
    metrics = load_metrics(cfg) if metrics is None else metrics
    if not metrics:
        pd.DataFrame(columns=["experiment"]).to_csv(out / "ablations.csv", index=False)
        return placeholder(out / "ablations.pdf", "Ablations",
                           f"no metrics yet ({cfg.layout.metrics('<experiment>', '<backend>')})", cfg)
    rows, cis = {}, {}
    for m in metrics:
        r = rows.setdefault(m["experiment"], {"experiment": m["experiment"]})
        iv = interval_columns(m)
        if m.get("aggregate"):
            r[f"total ({m['backend']})"] = m["aggregate"].get("total")
            cis[(m["experiment"], f"total ({m['backend']})")] = [iv["total_lo"], iv["total_hi"]]
        if m.get("fid") is not None:
            r[f"FID ({m['backend']})"] = m["fid"]
            cis[(m["experiment"], f"FID ({m['backend']})")] = [iv["fid_lo"], iv["fid_hi"]]
        for c, (value, ci) in other_statistics(cfg, m).items():
            r[c], cis[(m["experiment"], c)] = value, ci
    df = pd.DataFrame(list(rows.values()))
    values = [c for c in df.columns if c != "experiment"]
    for c in values:  # each number's own bootstrap interval (eval/uncertainty.py): it describes the model
        df[f"{c} lo"] = [cis.get((e, c), [np.nan, np.nan])[0] for e in df["experiment"]]
        df[f"{c} hi"] = [cis.get((e, c), [np.nan, np.nan])[1] for e in df["experiment"]]
    if "pyramid" in rows:
        # every decision is paired: the experiment against pyramid on the same prompts and seeds
        for c in values:
            for k in ("", " lo", " hi", " p", " p_holm", " paired", " separated"):
                df[f"Δ {c}{k}"] = np.nan if k not in (" paired", " separated") else False
        pyramid = {m["backend"]: m for m in metrics if m["experiment"] == "pyramid"}
        row = {e: i for i, e in enumerate(df["experiment"])}
        for m in metrics:
            for c, d in ablation_deltas(cfg, m, pyramid.get(m["backend"])).items():
                for k, v in d.items():
                    df.loc[row[m["experiment"]], f"Δ {c}{k}"] = v
    df.to_csv(out / "ablations.csv", index=False)
    plt = _plt()
    sheets = [(n, img) for n in rows if (img := sample_frames(cfg, n)) is not None]
    # table on top (one row per experiment), the experiments' sample frames side by side below it
    aspect = max((im.shape[0] / im.shape[1] for _, im in sheets), default=1.0)
    ncol = max(1, len(sheets))
    sheet_h = min(9.0, 13.0 / ncol * aspect) if sheets else 0.0
    table_h = 0.9 + 0.3 * (len(df) + 1)
    fig = plt.figure(figsize=(13, table_h + sheet_h + 0.6))
    gs = fig.add_gridspec(2 if sheets else 1, ncol, height_ratios=[table_h, sheet_h] if sheets else [1])
    ax = fig.add_subplot(gs[0, :])
    ax.axis("off")
    shown = pd.DataFrame({"experiment": df["experiment"]})
    for c in values:
        shown[c] = [("" if pd.isna(v) else f"{v:.2f}") + (f" {describe_interval([lo, hi])}" if not pd.isna(v) else "")
                    for v, lo, hi in zip(df[c], df[f"{c} lo"], df[f"{c} hi"])]
    for c in values:
        if f"Δ {c}" in df:
            shown[f"Δ {c}"] = ["" if pd.isna(v) else f"{v:+.2f}" + (f" {describe_interval([lo, hi], 2)}"
                                                                     if paired else " (marginal)")
                               + ("*" if sep else "")
                               for v, lo, hi, paired, sep in zip(df[f"Δ {c}"], df[f"Δ {c} lo"], df[f"Δ {c} hi"],
                                                                 df[f"Δ {c} paired"], df[f"Δ {c} separated"])]
    t = ax.table(cellText=shown.values, colLabels=list(shown.columns), loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1.0, 1.3)
    backends = ", ".join(sorted({m["backend"] for m in metrics}))
    ax.set_title(f"Ablations: metrics and deltas to `pyramid` (backends: {backends}; offline proxies are not "
                 "VBench)", fontsize=10, pad=12)
    for i, (n, p) in enumerate(sheets):
        a = fig.add_subplot(gs[1, i])
        a.imshow(p)
        a.axis("off")
        a.set_title(n, fontsize=8)
    left_out = not_run(cfg)
    fig.text(0.01, 0.005, f"[lo, hi] beside a number: its {LEVEL:.0%} bootstrap interval over the generated videos "
             "(prompt by prompt). Δ [lo, hi]: the paired difference to pyramid (same prompts and seeds resampled "
             "jointly); * = its interval excludes 0 and its label-swap p-value, Holm-adjusted over the backend's "
             "dimensions, is below 0.05. (marginal): scored before per-video units were saved, no paired test. "
             "'<statistic> (<backend>)' of a backend that is neither VBench-like nor an FID: the mean of its per-video "
             "statistic (its paired Δ Holm-adjusted over the backend's statistics).\n"
             + (f"Not run by this profile (its `experiments` key): {', '.join(left_out)}; "
                "`snakemake --cores all --config experiments=all -- <report>` runs every experiment.\n"
                if left_out else "")
             + footer(cfg), fontsize=7)
    fig.savefig(out / "ablations.pdf", bbox_inches="tight")
    plt.close(fig)
    return out / "ablations.pdf"


def render_all(cfg: Config, out: Path | None = None, metrics_files: list[Path] | None = None,
               fid_files: list[Path] | None = None) -> list[Path]:
    """Every report (layout.REPORT_FILES): table1/table5/fid_convergence/ablations/gpu_hours always (a placeholder
    page says what is missing), table6 only when EvalCrafter metrics exist. Reads the given metrics and FID-curve
    files (the workflow passes its rule's inputs) or, without them, whatever the layout holds; the GPU-hour audit
    reads every ledger of the run (layout.ledger_glob) and the Snakemake benchmark files."""
    out = Path(out or cfg.layout.reports)
    out.mkdir(parents=True, exist_ok=True)
    metrics, curves = load_metrics(cfg, metrics_files), load_fid_curves(cfg, fid_files)
    claims = claims_frame(cfg, curves)
    made = [render_table1(cfg, out, metrics), render_table5(cfg, out, metrics), render_table6(cfg, out, metrics),
            render_fid(cfg, out, curves, claims), render_ablations(cfg, out, metrics), render_gpu_hours(cfg, out=out),
            render_claims(cfg, out, curves, claims)]
    return [p for p in made if p is not None]
