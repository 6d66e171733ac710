"""The user-study report: user_study_<name>.{pdf,csv,md} (file names: layout.USER_STUDY_REPORT_FILES).

The figure follows the paper's user-study figure (Sec. 5): one horizontal stacked bar per question and model
pair, split into win / tie / loss of the first model with the percentages written on it. The PDF's further pages
and the Markdown hold the same tables (`report_tables`: rates with 95% intervals, Bradley-Terry scores, agreement),
typeset on pages of the first page's size, and the provenance: the sample folders with their samples.json
provenance (profile, config hash, commit), the checkpoints, raters, votes and the study's creation time. Names
that come from the study (models, the study, paths) are escaped in the Markdown, so that it renders them as text
also where Markdown is turned into HTML.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pyramid_repro.layout import user_study_report_files
from pyramid_repro.provenance import atomic_write_bytes
from pyramid_repro.study.analysis import StudyAnalysis
from pyramid_repro.study.db import QUESTIONS

QUESTION_TITLE = {"aesthetic": "Aesthetic quality", "motion": "Motion smoothness", "semantic": "Semantic alignment"}
COLOURS = {"win": "#3b6fb6", "tie": "#b9b9b9", "loss": "#e08a3c"}
PAGE = (8.5, 11.0)  # inches (US letter), every page of the PDF
MARGIN = 0.6  # inches, every side of the table pages
TABLE_FONT = 8.0  # points: the tables' text
ROW = 0.22  # inches: one table row at TABLE_FONT
TEXT_FONT = 7.5  # points: sentences and provenance lines
LINE = 0.17  # inches: one line of text at TEXT_FONT


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"  # NaN: e.g. agreement with one rater


def _ci(lo: float, hi: float, scale: float = 100.0, digits: int = 1) -> str:
    if lo != lo or hi != hi:  # NaN
        return ""
    return f"[{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def counted(n: int, noun: str) -> str:
    """'1 rater', '3 raters' (nouns of this report take a plain -s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_escape(text: str) -> str:
    """`text` as literal Markdown: HTML's & < > as entities, Markdown's active characters backslash-escaped."""
    return re.sub(r"[&<>]", lambda m: _MD_ENTITIES[m.group()], re.sub(r"([\\`*_\[\]|#!~])", r"\\\1", str(text)))


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
             f"{counted(int(meta.get('raters') or 0), 'rater link')}, "
             f"{counted(int(meta.get('repeats') or 0), 'repeat')} per rater)",
             f"{counted(a.n_raters, 'rater')} voted: {counted(a.n_votes, 'vote')} "
             f"({counted(a.n_first, 'first showing')}, {counted(a.n_votes - a.n_first, 'repeat')}) on "
             f"{counted(a.n_prompts, 'prompt')}"]
    for s in sources:
        p = s["provenance"] or {}
        lines.append(f"{s['model']}: {s['samples_json']} (profile {p.get('profile', '?')}, config "
                     f"{p.get('config_hash', '?')}, commit {p.get('commit', '?')}); checkpoint {s['checkpoint']}")
    lines.append(f"intervals: {int(100 * 0.95)}% crossed bootstrap over raters and prompts, {a.n_resamples} "
                 "resamples; ties count half a win in Bradley-Terry")
    lines.append(f"rendered {report_prov.get('created_utc')} | profile {report_prov.get('profile')} | config "
                 f"{report_prov.get('config_hash')} | commit {report_prov.get('commit')}")
    return lines


@dataclass
class ReportTable:
    """One table of the report, as the Markdown and the PDF show it: cells are text; `numeric` columns hold our
    formatted numbers (right-aligned in the PDF), the others names (escaped in the Markdown)."""

    heading: str
    intro: str
    columns: list[str]
    numeric: list[bool]
    rows: list[list[str]]


def report_tables(a: StudyAnalysis) -> list[ReportTable]:
    """The report's tables: win / tie / loss rates, Bradley-Terry scores (more than two models), rater agreement
    and, with repeats, each rater's consistency."""
    out = [ReportTable(
        "Win / tie / loss", "Win / tie / loss of model A against model B per question (first showings; 95% "
        "intervals from a bootstrap over raters and prompts).",
        ["question", "model A", "model B", "votes", "win %", "tie %", "loss %"], [False] * 3 + [True] * 4,
        [[QUESTION_TITLE[r.question], str(r.model_a), str(r.model_b), str(r.votes)]
         + [f"{100 * r[k]:.1f} {_ci(r[k + '_lo'], r[k + '_hi'])}".strip() for k in ("win", "tie", "loss")]
         for _, r in a.pairwise.iterrows()])]
    if len(a.bradley_terry):
        out.append(ReportTable(
            "Bradley-Terry scores", "Log-strength, centred; ties count half a win.",
            ["question", "model", "score", "95% interval", "rank"], [False, False, True, True, True],
            [[QUESTION_TITLE[r.question], str(r.model), f"{r.score:+.2f}", _ci(r.score_lo, r.score_hi, 1.0, 2),
              str(r["rank"])] for _, r in a.bradley_terry.iterrows()]))
    out.append(ReportTable(
        "Rater agreement", "", ["question", "Fleiss' kappa", "pairwise agreement", "comparisons"],
        [False, True, True, True],
        [[QUESTION_TITLE[r.question],
          f"{r.fleiss_kappa:.2f}" if r.fleiss_kappa == r.fleiss_kappa else
          "n/a (no comparison with 2 raters)" if not r["items"] else "n/a (one answer only)",
          _pct(r.pairwise_agreement), str(r["items"])] for _, r in a.rater_agreement.iterrows()]))
    if len(a.repeat_agreement):
        out.append(ReportTable(
            "Repeated comparisons", "Same answer on a repeated comparison (sides swapped), per rater.",
            ["rater", "repeats", *(QUESTION_TITLE[q] for q in QUESTIONS)], [True] * (2 + len(QUESTIONS)),
            [[str(int(r.rater)), str(int(r.repeats)), *(_pct(r[q]) for q in QUESTIONS)]
             for _, r in a.repeat_agreement.iterrows()]))
    return out


def markdown(a: StudyAnalysis, prov: list[str], name: str) -> str:
    """The report as Markdown: the tables and the provenance, every name from the study escaped (md_escape)."""
    out = [f"# User study {md_escape(name)}"]
    for i, t in enumerate(report_tables(a)):
        out += [""] + ([f"## {t.heading}", ""] if i else []) + ([t.intro, ""] if t.intro else [])
        out += ["| " + " | ".join(t.columns) + " |", "|" + "".join("---:|" if n else "---|" for n in t.numeric)]
        out += ["| " + " | ".join(c if n else md_escape(c) for c, n in zip(row, t.numeric)) + " |" for row in t.rows]
    out += ["", "## Provenance", ""] + [f"- {md_escape(line)}" for line in prov]
    return "\n".join(out) + "\n"


def bar_page(a: StudyAnalysis, name: str):
    """Page 1: the stacked bars (one per question and model pair), at the top of a PAGE-sized figure."""
    plt = _plt()
    pairs = list(dict.fromkeys(zip(a.pairwise.model_a, a.pairwise.model_b)))
    rows = [(p, q) for p in pairs for q in QUESTIONS]
    fig = plt.figure(figsize=PAGE)
    ax = fig.add_subplot()
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
    ax.set_title(f"User study {name}: {counted(a.n_raters, 'rater')}, {counted(a.n_first, 'comparison')}", pad=24)
    # the chart keeps the height its bars need (0.45 inch each) at the top of the page, the rest stays blank
    height = min(PAGE[1], 1.2 + 0.45 * len(rows) + 0.3 * len(pairs))
    fig.tight_layout(rect=(0, 1 - height / PAGE[1], 1, 1))
    return fig


def _text_width(text: str, size: float) -> float:
    """Width of `text` in inches at font size `size` (matplotlib's default font)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    return TextToPath().get_text_width_height_descent(text, FontProperties(size=size), ismath=False)[0] / 72


def _draw_table(fig, t: ReportTable, rows: list[list[str]], top: float) -> float:
    """Draw the header and `rows` of `t` with its top `top` inches below the page's top; returns its height."""
    from matplotlib.table import Table

    pad = 0.12  # inches either side of a cell's text
    widths = [max(_text_width(c, TABLE_FONT) for c in [h, *(r[j] for r in t.rows)]) + 2 * pad
              for j, h in enumerate(t.columns)]
    width = min(sum(widths), PAGE[0] - 2 * MARGIN)
    height = ROW * (len(rows) + 1)
    ax = fig.add_axes((MARGIN / PAGE[0], 1 - (top + height) / PAGE[1], width / PAGE[0], height / PAGE[1]))
    ax.axis("off")
    table = Table(ax, bbox=(0, 0, 1, 1))
    for i, row in enumerate([t.columns, *rows]):
        for j, (text, w) in enumerate(zip(row, widths)):
            cell = table.add_cell(i, j, w / sum(widths), 1 / (len(rows) + 1), text=text,
                                  loc="right" if t.numeric[j] else "left")
            cell.PAD = pad / w
            cell.set_linewidth(0.6)
            cell.visible_edges = "B" if i == 0 or i == len(rows) else ""
            if i == 0:
                cell.get_text().set_fontweight("bold")
            elif i % 2 == 0:
                cell.set_facecolor("#f0f0f0")
    table.auto_set_font_size(False)
    table.set_fontsize(TABLE_FONT)
    ax.add_table(table)
    return height


def table_pages(a: StudyAnalysis, prov: list[str], name: str) -> list:
    """Pages 2 and on: every table of `report_tables` typeset (aligned columns, TABLE_FONT), then the provenance,
    on PAGE-sized figures; a table that does not fit continues on the next page under its header."""
    plt = _plt()
    pages: list = []
    top = PAGE[1]

    def space(needed: float) -> None:
        nonlocal top
        if top + needed > PAGE[1] - MARGIN:
            pages.append(plt.figure(figsize=PAGE))
            top = MARGIN

    def text(lines: list[str], size: float = TEXT_FONT, weight: str = "normal", line: float = LINE) -> None:
        nonlocal top
        for ln in lines:
            space(line)
            pages[-1].text(MARGIN / PAGE[0], 1 - top / PAGE[1], ln, va="top", ha="left", fontsize=size,
                           fontweight=weight)
            top += line

    chars = int((PAGE[0] - 2 * MARGIN) / _text_width("0", TEXT_FONT))  # a line's characters (digit-wide)
    space(PAGE[1])
    text([f"User study {name}: tables"], 12, "bold", 0.35)
    for t in report_tables(a):
        space(0.3 + LINE + 2 * ROW)  # a heading never ends a page
        top += 0.1
        text([t.heading], 9.5, "bold", 0.22)
        text(textwrap.wrap(t.intro, chars))
        top += 0.05
        rows = t.rows
        while rows:
            space(2 * ROW)
            fit = max(1, int((PAGE[1] - MARGIN - top) / ROW) - 1)
            top += _draw_table(pages[-1], t, rows[:fit], top)
            rows = rows[fit:]
    top += 0.15
    text(["Provenance"], 9.5, "bold", 0.22)
    text([w for ln in prov for w in textwrap.wrap(ln, chars, subsequent_indent="    ")])
    return pages


def figure(a: StudyAnalysis, prov: list[str], path: Path, name: str) -> None:
    """The PDF: page 1 the stacked bars, then the tables and provenance (table_pages), all pages of size PAGE."""
    plt = _plt()
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    with matplotlib.rc_context({"text.parse_math": False}):  # a '$' in a name is text, not mathtext
        figs = [bar_page(a, name), *table_pages(a, prov, name)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with PdfPages(tmp) as pdf:
            for f in figs:
                pdf.savefig(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        for f in figs:
            plt.close(f)


def write_report(a: StudyAnalysis, meta: dict[str, Any], sources: list[dict[str, Any]], report_prov: dict[str, Any],
                 out: Path, name: str) -> list[Path]:
    """Write user_study_<name>.pdf, .csv and .md into `out` (layout.user_study_report_files); returns their
    paths."""
    prov = provenance_lines(meta, sources, a, report_prov)
    out.mkdir(parents=True, exist_ok=True)
    pdf, csv, md = (out / f for f in user_study_report_files(name))
    figure(a, prov, pdf, name)
    atomic_write_bytes(csv, ("".join(f"# {line}\n" for line in prov) + csv_table(a).to_csv(index=False)).encode())
    atomic_write_bytes(md, markdown(a, prov, name).encode())
    return [pdf, csv, md]
