"""The user-study report: user_study.{pdf,csv,md}.

The figure follows the paper's user-study figure (Sec. 5): one horizontal stacked bar per question and model
pair, split into win / tie / loss of the first model with the percentages written on it. The PDF's second page
and the Markdown hold the tables (rates with 95% intervals, Bradley-Terry scores, agreement) and the provenance:
the sample folders with their samples.json provenance (profile, config hash, commit), the checkpoints, raters,
votes and the study's creation time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pyramid_repro.provenance import atomic_write_bytes
from pyramid_repro.study.analysis import StudyAnalysis
from pyramid_repro.study.db import QUESTIONS

QUESTION_TITLE = {"aesthetic": "Aesthetic quality", "motion": "Motion smoothness", "semantic": "Semantic alignment"}
COLOURS = {"win": "#3b6fb6", "tie": "#b9b9b9", "loss": "#e08a3c"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo: float, hi: float, scale: float = 100.0, digits: int = 1) -> str:
    if lo != lo or hi != hi:  # NaN
        return ""
    return f"[{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def csv_table(a: StudyAnalysis) -> pd.DataFrame:
    """One long table: `kind` = pairwise (rates of model_a vs model_b), bradley_terry, repeat_agreement,
    rater_agreement."""
    parts = [a.pairwise.assign(kind="pairwise")]
    if len(a.bradley_terry):
        parts.append(a.bradley_terry.assign(kind="bradley_terry"))
    if len(a.repeat_agreement):
        parts.append(a.repeat_agreement.assign(kind="repeat_agreement"))
    parts.append(a.rater_agreement.assign(kind="rater_agreement"))
    df = pd.concat(parts, ignore_index=True)
    for col in ("votes", "raters", "prompts", "rank", "rater", "repeats", "items"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df[["kind", *[c for c in df.columns if c != "kind"]]]


def provenance_lines(meta: dict[str, Any], sources: list[dict[str, Any]], a: StudyAnalysis,
                     report_prov: dict[str, Any]) -> list[str]:
    """What the report rests on, one fact per line."""
    lines = [f"study {meta.get('name')} created {meta.get('created_utc')} (seed {meta.get('seed')}, "
             f"{meta.get('raters')} rater links, {meta.get('repeats')} repeats per rater)",
             f"{a.n_raters} raters voted: {a.n_votes} votes ({a.n_first} first showings, "
             f"{a.n_votes - a.n_first} repeats) on {a.n_prompts} prompts"]
    for s in sources:
        p = s["provenance"] or {}
        lines.append(f"{s['model']}: {s['samples_json']} (profile {p.get('profile', '?')}, config "
                     f"{p.get('config_hash', '?')}, commit {p.get('commit', '?')}); checkpoint {s['checkpoint']}")
    lines.append(f"intervals: {int(100 * 0.95)}% crossed bootstrap over raters and prompts, {a.n_resamples} "
                 "resamples; ties count half a win in Bradley-Terry")
    lines.append(f"rendered {report_prov.get('created_utc')} | profile {report_prov.get('profile')} | config "
                 f"{report_prov.get('config_hash')} | commit {report_prov.get('commit')}")
    return lines


def markdown(a: StudyAnalysis, prov: list[str]) -> str:
    out = ["# User study", "", "Win / tie / loss of model A against model B per question (first showings; 95% "
           "intervals from a bootstrap over raters and prompts).", "",
           "| question | model A | model B | votes | win % | tie % | loss % |", "|---|---|---|---|---|---|---|"]
    for _, r in a.pairwise.iterrows():
        out.append(f"| {QUESTION_TITLE[r.question]} | {r.model_a} | {r.model_b} | {r.votes} | "
                   + " | ".join(f"{100 * r[k]:.1f} {_ci(r[k + '_lo'], r[k + '_hi'])}" for k in ("win", "tie", "loss"))
                   + " |")
    if len(a.bradley_terry):
        out += ["", "## Bradley-Terry scores (log-strength, centred; ties = half a win)", "",
                "| question | model | score | 95% interval | rank |", "|---|---|---|---|---|"]
        for _, r in a.bradley_terry.iterrows():
            out.append(f"| {QUESTION_TITLE[r.question]} | {r.model} | {r.score:+.2f} | "
                       f"{_ci(r.score_lo, r.score_hi, 1.0, 2)} | {r['rank']} |")
    out += ["", "## Rater agreement", "", "| question | Fleiss' kappa | pairwise agreement | comparisons |",
            "|---|---|---|---|"]
    for _, r in a.rater_agreement.iterrows():
        kappa = "n/a (one answer only)" if r.fleiss_kappa != r.fleiss_kappa else f"{r.fleiss_kappa:.2f}"
        out.append(f"| {QUESTION_TITLE[r.question]} | {kappa} | {_pct(r.pairwise_agreement)} | "
                   f"{r['items']} |")
    if len(a.repeat_agreement):
        out += ["", "Same answer on a repeated comparison (sides swapped), per rater:", "",
                "| rater | repeats | " + " | ".join(QUESTION_TITLE[q] for q in QUESTIONS) + " |",
                "|---|---|" + "---|" * len(QUESTIONS)]
        for _, r in a.repeat_agreement.iterrows():
            out.append(f"| {int(r.rater)} | {int(r.repeats)} | " + " | ".join(_pct(r[q]) for q in QUESTIONS) + " |")
    out += ["", "## Provenance", ""] + [f"- {line}" for line in prov]
    return "\n".join(out) + "\n"


def figure(a: StudyAnalysis, prov: list[str], path: Path) -> None:
    """Page 1: the stacked bars (one per question and model pair); page 2: tables and provenance as text."""
    plt = _plt()
    from matplotlib.backends.backend_pdf import PdfPages

    pairs = list(dict.fromkeys(zip(a.pairwise.model_a, a.pairwise.model_b)))
    rows = [(p, q) for p in pairs for q in QUESTIONS]
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.45 * len(rows) + 0.3 * len(pairs)))
    labels, y = [], 0.0
    ys = []
    for i, (pair, q) in enumerate(rows):
        if i and q == QUESTIONS[0]:
            y += 0.6  # gap between model pairs
        r = a.pairwise[(a.pairwise.model_a == pair[0]) & (a.pairwise.model_b == pair[1])
                       & (a.pairwise.question == q)].iloc[0]
        left = 0.0
        for k in ("win", "tie", "loss"):
            ax.barh(y, 100 * r[k], left=left, color=COLOURS[k], edgecolor="white",
                    label=k if i == 0 else None, height=0.8)
            if r[k] >= 0.06:
                ax.text(left + 50 * r[k], y, f"{100 * r[k]:.0f}%", ha="center", va="center", fontsize=8,
                        color="white" if k != "tie" else "black")
            left += 100 * r[k]
        labels.append(f"{pair[0]} vs {pair[1]}\n{QUESTION_TITLE[q]}")
        ys.append(y)
        y += 1
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of votes (%): first model wins / tie / first model loses")
    ax.legend(["win", "tie", "loss"], ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.set_title(f"User study: {a.n_raters} raters, {a.n_first} comparisons", pad=24)
    fig.tight_layout()
    text = markdown(a, prov).replace("|", " ").replace("---", "")
    page2 = plt.figure(figsize=(8.5, 11))
    page2.text(0.03, 0.98, text, va="top", ha="left", family="monospace", fontsize=5.5, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with PdfPages(tmp) as pdf:
        pdf.savefig(fig)
        pdf.savefig(page2)
    tmp.replace(path)
    plt.close(fig)
    plt.close(page2)


def write_report(a: StudyAnalysis, meta: dict[str, Any], sources: list[dict[str, Any]], report_prov: dict[str, Any],
                 out: Path) -> list[Path]:
    """Write user_study.pdf, .csv and .md into `out`; returns their paths."""
    prov = provenance_lines(meta, sources, a, report_prov)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "user_study.pdf", out / "user_study.csv", out / "user_study.md"]
    figure(a, prov, paths[0])
    csv = csv_table(a).to_csv(index=False)
    atomic_write_bytes(paths[1], ("".join(f"# {line}\n" for line in prov) + csv).encode())
    atomic_write_bytes(paths[2], markdown(a, prov).encode())
    return paths
