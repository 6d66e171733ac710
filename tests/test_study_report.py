"""User-study statistics against simulated studies with known preferences, and the rendered report."""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import subprocess
from html import unescape as html_unescape

import numpy as np
import pandas as pd
import pytest
from study_helpers import cli, make_study

from pyramid_repro.provenance import atomic_write_bytes
from pyramid_repro.study.analysis import analyse, bradley_terry, fleiss_kappa, repeat_agreement
from pyramid_repro.study.db import connect, record_vote
from pyramid_repro.study.render import write_report


def simulate(n_raters: int, n_prompts: int, strengths: dict[str, float], rng, rater_sd: float = 0.0,
             prompt_sd: float = 0.0, tie: float = 0.0) -> list[dict]:
    """Votes of a crossed study (every rater judges every model pair on every prompt, sides alternating).
    Two models: P(first model wins) = strengths[first] + rater effect + prompt effect (uniform effects with the
    given half-widths, mean 0, so the population win rate is exactly strengths[first]); more models:
    Bradley-Terry with log-strengths `strengths`. `tie`: probability of a 'same' answer."""
    models = list(strengths)
    a_r = rng.uniform(-rater_sd, rater_sd, n_raters)
    b_p = rng.uniform(-prompt_sd, prompt_sd, n_prompts)
    rows, k = [], 0
    for i in range(len(models)):
        for j in range(i + 1, len(models)):
            for r in range(n_raters):
                for p in range(n_prompts):
                    k += 1
                    if len(models) == 2:
                        p_win = strengths[models[0]] + a_r[r] + b_p[p]
                    else:
                        p_win = 1 / (1 + np.exp(strengths[models[j]] - strengths[models[i]]))
                    u = rng.random()
                    outcome = "same" if u < tie else ("i" if rng.random() < p_win else "j")
                    i_left = (r + p) % 2 == 0
                    ans = "same" if outcome == "same" else ("A" if (outcome == "i") == i_left else "B")
                    rows.append({"vote": k, "assignment": k, "rater": r, "prompt_id": f"p{p}", "position": k,
                                 "repeat_of": None, "left_model": models[i] if i_left else models[j],
                                 "right_model": models[j] if i_left else models[i], "aesthetic": ans, "motion": ans,
                                 "semantic": ans, "created_utc": ""})
    return rows


@pytest.mark.parametrize("rater_sd,prompt_sd", [(0.0, 0.0), (0.15, 0.1)])
def test_win_rate_interval_covers_the_true_preference(rater_sd, prompt_sd):
    """Raters prefer model A with probability 0.7 (on average over raters and prompts): over 200 simulated studies
    the 95% interval covers 0.7 at a rate near 95%, with or without rater and prompt effects."""
    rng = np.random.default_rng(7)
    hits, widths = 0, []
    n = 200
    for s in range(n):
        rows = simulate(16, 20, {"a": 0.7, "b": 0.0}, rng, rater_sd, prompt_sd)
        r = analyse(rows, ["a", "b"], n_resamples=300, seed=s).pairwise.iloc[0]
        hits += r.win_lo <= 0.7 <= r.win_hi
        widths.append(r.win_hi - r.win_lo)
    coverage = hits / n
    assert 0.88 <= coverage <= 0.995, coverage
    assert np.mean(widths) < 0.25


def test_rates_and_sides(tmp_path):
    """A / B answers are credited to the model that was on that side: a rater who always prefers model b,
    wherever it is shown, gives b every win."""
    rng = np.random.default_rng(0)
    rows = simulate(4, 6, {"a": 0.0, "b": 0.0}, rng)
    for row in rows:
        ans = "A" if row["left_model"] == "b" else "B"
        row.update(aesthetic=ans, motion="same", semantic=ans)
    res = analyse(rows, ["a", "b"], n_resamples=200)
    by_q = res.pairwise.set_index("question")
    assert by_q.loc["aesthetic", "loss"] == 1.0 and by_q.loc["aesthetic", "win"] == 0.0
    assert by_q.loc["motion", "tie"] == 1.0
    assert by_q.loc["aesthetic", "votes"] == 24 and by_q.loc["aesthetic", "raters"] == 4
    assert res.rater_agreement.set_index("question").loc["aesthetic", "pairwise_agreement"] == 1.0
    assert res.bradley_terry.empty  # two models: the pairwise rates say it all


def test_bradley_terry_recovers_known_strengths():
    truth = {"pyramid": 1.0, "fullseq": 0.0, "other": -0.8}
    rows = simulate(12, 15, truth, np.random.default_rng(3))
    res = analyse(rows, list(truth), n_resamples=300)
    bt = res.bradley_terry[res.bradley_terry.question == "aesthetic"].set_index("model")
    assert list(bt.sort_values("score", ascending=False).index) == ["pyramid", "fullseq", "other"]
    assert list(bt["rank"]) == [1, 2, 3]
    centred = {m: v - np.mean(list(truth.values())) for m, v in truth.items()}
    for m, v in centred.items():
        assert abs(bt.loc[m, "score"] - v) < 0.3, (m, bt.loc[m, "score"], v)
        assert bt.loc[m, "score_lo"] <= v <= bt.loc[m, "score_hi"]
    # the MM fit itself: a noiseless win matrix from known strengths gives them back
    p = np.exp(np.array([0.5, 0.0, -0.5]))
    wins = 1000 * p[:, None] / (p[:, None] + p[None, :])
    np.fill_diagonal(wins, 0)
    np.testing.assert_allclose(bradley_terry(wins, prior=0.0), [0.5, 0.0, -0.5], atol=1e-6)


def test_fleiss_kappa_and_repeat_agreement():
    # Fleiss (1971) style example (Wikipedia's 10 items x 14 raters x 5 categories): kappa 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    kappa, agree = fleiss_kappa(table)
    assert kappa == pytest.approx(0.210, abs=1e-3) and agree == pytest.approx(0.378, abs=1e-3)
    assert fleiss_kappa(np.array([[3, 0, 0], [0, 3, 0]]))[0] == pytest.approx(1.0)
    first = {"vote": 1, "assignment": 1, "rater": 1, "prompt_id": "p", "position": 0, "repeat_of": None,
             "left_model": "a", "right_model": "b", "aesthetic": "A", "motion": "same", "semantic": "B"}
    # shown again with the sides swapped: the same preference is the opposite letter
    again = {**first, "vote": 2, "assignment": 2, "position": 2, "repeat_of": 1, "left_model": "b",
             "right_model": "a", "aesthetic": "B", "motion": "same", "semantic": "B"}
    ra = repeat_agreement([first, again], ["a", "b"]).set_index("rater")
    assert ra.loc[1, "aesthetic"] == 1.0 and ra.loc[1, "motion"] == 1.0 and ra.loc[1, "semantic"] == 0.0
    assert ra.loc[1, "repeats"] == 1


def test_report_command_writes_pdf_csv_md_with_provenance(tmp_path):
    results, db = make_study(tmp_path, "rep", models=3, prompts=3, raters=3, repeats=1)
    conn = connect(db)
    rng = np.random.default_rng(1)
    rows = conn.execute(
        "SELECT r.token, a.id, sl.model, sr.model FROM assignments a JOIN raters r ON r.id = a.rater_id "
        "JOIN videos vl ON vl.id = a.left_video JOIN sources sl ON sl.id = vl.source_id "
        "JOIN videos vr ON vr.id = a.right_video JOIN sources sr ON sr.id = vr.source_id").fetchall()
    for token, a, left, right in rows:
        # pyramid always wins aesthetic (fullseq vs third: random); motion random; semantic always 'same'
        if "pyramid" in (left, right):
            pick = "A" if left == "pyramid" else "B"
        else:
            pick = "A" if rng.random() < 0.5 else "B"
        record_vote(conn, token, a, {"aesthetic": pick, "motion": rng.choice(["A", "B", "same"]),
                                     "semantic": "same"})
    conn.close()
    out = tmp_path / "reports"
    r = cli(results, "study", "report", "--profile", "smoke", "--name", "rep", "--out", str(out),
            "--resamples", "200")
    assert r.returncode == 0, r.stdout + r.stderr
    pdf, csv, md = (out / f"user_study_rep.{ext}" for ext in ("pdf", "csv", "md"))
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000
    text = md.read_text()
    for needle in ("hash-pyramid", "hash-fullseq", "commit abc123", "ckpt/third", "3 raters voted",
                   "Bradley-Terry", "Fleiss", "samples.json", "created"):
        assert needle in text, needle
    df = pd.read_csv(io.StringIO("".join(ln for ln in csv.read_text().splitlines(True) if not ln.startswith("#"))))
    pw = df[df.kind == "pairwise"]
    assert len(pw) == 3 * 3  # three pairs x three questions
    sem = pw[pw.question == "semantic"]
    assert (sem.tie == 1.0).all()
    aes = pw[(pw.question == "aesthetic") & (pw.model_a == "pyramid")]
    assert (aes.win == 1.0).all() and len(aes) == 2
    with sqlite3.connect(db) as c:
        n_votes = c.execute("SELECT count(*) FROM votes").fetchone()[0]
    assert f"{n_votes} votes" in text
    bt = df[(df.kind == "bradley_terry") & (df.question == "aesthetic")].set_index("model")
    assert bt.loc["pyramid", "rank"] == 1
    # a study without votes is a clear error, an unknown one too
    make_study(tmp_path / "empty", "none", models=2, prompts=1, raters=1)
    r = cli(tmp_path / "empty" / "results", "study", "report", "--profile", "smoke", "--name", "none")
    assert r.returncode == 2 and "no votes yet" in r.stderr
    r = cli(results, "study", "report", "--profile", "smoke", "--name", "missing")
    assert r.returncode == 2 and "unknown study 'missing'" in r.stderr


def test_snakemake_rule_builds_the_report_from_the_database_outside_the_main_target(tmp_path):
    """The study's name comes from the requested file (reports/<profile>/user_study_<name>.pdf), as the README
    and docs/user_study.md say."""
    from conftest import snakemake

    results, db = make_study(tmp_path, "pilot", models=2, prompts=1, raters=1)
    cfg = ["--config", "profile=smoke", f"results={results}", f"reports={tmp_path}/reports"]
    r = snakemake("-n", "-p", *cfg, "--", f"{tmp_path}/reports/smoke/user_study_pilot.pdf", timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "user_study_report" in r.stdout
    assert f"pyramid-repro study report --profile smoke --name pilot --out {tmp_path}/reports/smoke" in r.stdout
    db.rename(db.with_suffix(".moved"))  # the database is the rule's input
    r = snakemake("-n", *cfg, "--", f"{tmp_path}/reports/smoke/user_study_pilot.pdf", timeout=300)
    assert r.returncode != 0 and "study.sqlite" in r.stdout + r.stderr
    r = snakemake("-n", "-p", *cfg, timeout=300)  # the default target (rule all) does not build it
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "user_study_report" not in r.stdout and "study report" not in r.stdout


def _pdf_words(pdf, page: int) -> tuple[tuple[float, float], list[tuple[float, float, float, float, str]]]:
    """Page size and words (xMin, yMin, xMax, yMax, text) of one page, from poppler's `pdftotext -bbox`."""
    html = subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(pdf), "-"],
                          capture_output=True, text=True, check=True).stdout
    size = re.search(r'<page width="([\d.]+)" height="([\d.]+)"', html)
    words = [(*map(float, m.groups()[:4]), html_unescape(m.group(5))) for m in re.finditer(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', html)]
    return (float(size.group(1)), float(size.group(2))), words


def test_report_files_carry_the_study_name_with_the_usual_permissions_and_a_typeset_table_page(tmp_path):
    """One rater: the title says "1 rater"; the files are user_study_<name>.* with the permissions open() gives
    (0666 less the umask; atomic_write_bytes, which every report uses, too), a second study's report leaves the
    first's alone, the Markdown escapes the model names, and page 2 is a table (aligned columns, >= 7 pt) on a
    page of page 1's size."""
    rows = simulate(1, 3, {"pyr<amid>": 0.7, "full|seq*": 0.0}, np.random.default_rng(0))
    a = analyse(rows, ["pyr<amid>", "full|seq*"], n_resamples=50)
    meta = {"name": "s1", "created_utc": "now", "seed": 0, "raters": 1, "repeats": 0}
    sources = [{"model": m, "samples_json": f"{m}/samples.json", "checkpoint": None, "provenance": {}}
               for m in ("pyr<amid>", "full|seq*")]
    prov = {"created_utc": "now", "profile": "smoke", "config_hash": "h", "commit": "c"}
    out = tmp_path / "reports"
    old = os.umask(0o022)
    try:
        first = write_report(a, meta, sources, prov, out, "s1")
        before = {p: p.read_bytes() for p in first}
        second = write_report(a, {**meta, "name": "s2"}, sources, prov, out, "s2")
        for mask, mode in ((0o077, 0o600), (0o002, 0o664)):
            os.umask(mask)
            atomic_write_bytes(tmp_path / f"mode{mask:o}", b"x")
            assert (tmp_path / f"mode{mask:o}").stat().st_mode & 0o777 == mode
    finally:
        os.umask(old)
    assert [p.name for p in first] == ["user_study_s1.pdf", "user_study_s1.csv", "user_study_s1.md"]
    assert [p.name for p in second] == ["user_study_s2.pdf", "user_study_s2.csv", "user_study_s2.md"]
    assert {p: p.read_bytes() for p in first} == before
    assert {p.stat().st_mode & 0o777 for p in first + second} == {0o644}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    md = first[2].read_text()
    assert "pyr&lt;amid&gt;" in md and "full\\|seq\\*" in md and "<amid>" not in md and "1 rater voted" in md
    # every table row has as many cells as its header (an unescaped | would add one)
    table_rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len({len(re.findall(r"(?<!\\)\|", ln)) for ln in table_rows[:5]}) == 1
    pdf = first[0]
    sizes = re.findall(rb"/MediaBox \[ *([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+) *\]", pdf.read_bytes())
    assert len(sizes) >= 2 and len(set(sizes)) == 1, sizes  # every page the size of page 1
    if not shutil.which("pdftotext"):
        return
    _, p1 = _pdf_words(pdf, 1)
    title = " ".join(w[4] for w in p1)
    assert "s1: 1 rater, 3 comparisons" in title and "raters" not in title
    _, words = _pdf_words(pdf, 2)
    text = " ".join(w[4] for w in words)
    tables = text[:text.index("Provenance")]
    assert "|" not in tables.replace("full|seq*", "") and "---" not in tables  # no Markdown syntax in the tables
    assert min(w[3] - w[1] for w in words) >= 7  # readable: at least 7 pt high
    win_rows = []
    for w in words:
        if w[4] in ("Aesthetic", "Motion", "Semantic"):  # a row: the words level with its first
            row = sorted(v for v in words if abs(v[1] - w[1]) < 2)
            if row[2][4] == "pyr<amid>":
                win_rows.append(row)
    assert len(win_rows) == 3, text
    for col, edge in ((3, 0), (4, 2)):  # model B: left-aligned (xMin), votes: right-aligned (xMax)
        assert max(r[col][edge] for r in win_rows) - min(r[col][edge] for r in win_rows) < 0.5, win_rows
