"""User-study design and storage: pairing and balancing, the WebM copies, clear errors, vote refusals in the
library, and the package's place in the layering."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import av
import pytest
from study_helpers import ROOT, cli, make_study, sample_folder

from pyramid_repro.commands.study import checkpoint_name
from pyramid_repro.config import ConfigError
from pyramid_repro.study.db import VoteError, connect, record_vote
from pyramid_repro.study.design import common_prompts, design, load_sample_set


def test_design_balances_sides_and_places_repeats():
    plan = design(3, [f"p{i}" for i in range(5)], raters=7, repeats=4, seed=3)
    items = {(it.model_a, it.model_b, it.prompt_id) for order in plan for it, _, _ in order}
    assert len(items) == 3 * 5
    left_counts: Counter = Counter()
    for order in plan:
        firsts = [(it, left) for it, left, rep in order if rep is None]
        assert sorted((i.model_a, i.model_b, i.prompt_id) for i, _ in firsts) == sorted(items)  # each item once
        repeats = [(pos, it, left, rep) for pos, (it, left, rep) in enumerate(order) if rep is not None]
        assert len(repeats) == 4
        for pos, it, left, rep in repeats:
            orig_item, orig_left, orig_rep = order[rep]
            assert orig_item == it and orig_rep is None
            assert left != orig_left  # shown again with the sides swapped
            assert pos >= rep + 2  # later, with at least one comparison in between
        for it, left in firsts:
            left_counts[(it, left)] += 1
    for it in {it for it, _ in left_counts}:
        assert abs(left_counts[(it, True)] - left_counts[(it, False)]) <= 1  # balanced across raters
    # different raters see different orders
    assert [o[0][0] for o in plan[:3]] != [plan[0][0][0]] * 3


def test_design_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="--raters 0"):
        design(2, ["p"], raters=0, repeats=0, seed=0)
    with pytest.raises(ConfigError, match="--repeats 2"):
        design(2, ["p", "q"], raters=1, repeats=2, seed=0)  # the second repeat would follow its original directly
    assert len(design(2, ["p", "q"], raters=1, repeats=1, seed=0)[0]) == 3


def test_create_registers_webm_copies_and_rotates_samples(tmp_path):
    results, db = make_study(tmp_path, "c", models=2, prompts=2, raters=3, samples=2)
    conn = connect(db)
    with conn:
        videos = conn.execute("SELECT id, file, media_type, original, sample_index FROM videos").fetchall()
        per_rater = conn.execute("SELECT a.rater_id, v.sample_index FROM assignments a "
                                 "JOIN videos v ON v.id = a.left_video").fetchall()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    conn.close()
    study = db.parent
    for vid, file, media, original, _ in videos:
        assert re.fullmatch(r"[0-9a-f]{32}", vid)
        assert Path(file).parent == study / "videos" and media == "video/webm"
        with av.open(file) as c:
            assert c.streams.video[0].codec_context.name == "vp9"
            assert sum(1 for _ in c.decode(video=0)) == 8
        assert Path(original).suffix == ".mp4"
    # rater r sees sample r mod 2: raters 1 and 3 the first sample, rater 2 the second
    assert {r: {i for rr, i in per_rater if rr == r} for r in (1, 2, 3)} == {1: {0}, 2: {1}, 3: {0}}
    assert json.loads(meta["models"]) == ["pyramid", "fullseq"] and json.loads(meta["raters"]) == 3
    assert (study / "rater_links.txt").read_text().count("/r/") == 3
    # the same name again is refused, the database untouched
    before = db.stat().st_size
    r = cli(results, "study", "create", "--profile", "smoke", "--name", "c", "--suite", "t",
            "--experiments", "pyramid", "fullseq", "--raters", "1")
    assert r.returncode == 2 and "exists already" in r.stderr and db.stat().st_size == before


def test_clear_errors_for_bad_sample_folders(tmp_path):
    a = sample_folder(tmp_path / "a", "a", ["one prompt"])
    b = sample_folder(tmp_path / "b", "b", ["another prompt"])
    (b / "samples.json").write_text(json.loads((b / "samples.json").read_text()).__repr__())
    with pytest.raises(ConfigError, match=r"b/samples.json: not a samples.json"):
        load_sample_set(b, "b")
    c = sample_folder(tmp_path / "c", "c", ["another prompt"])
    c_set = load_sample_set(c, "c")
    c_set.samples = [dict(s, prompt_id="zz") for s in c_set.samples]
    with pytest.raises(ConfigError, match="no prompt is sampled by every model") as e:
        common_prompts([load_sample_set(a, "a"), c_set])
    assert str(a / "samples.json") in str(e.value)
    (c / "another prompt-0.mp4").unlink()
    with pytest.raises(ConfigError, match="listed but not found"):
        load_sample_set(c, "c")
    with pytest.raises(ConfigError, match="no samples.json"):
        load_sample_set(tmp_path / "nothing", "x")
    # a compare folder (samples/ inside) is found, and named by its folder
    sample_folder(tmp_path / "cmp" / "samples", "cmp", ["one prompt"])
    assert load_sample_set(tmp_path / "cmp", "cmp").index == tmp_path / "cmp" / "samples" / "samples.json"
    assert checkpoint_name(tmp_path / "cmp", "t") == "cmp"
    assert checkpoint_name(tmp_path / "cmp" / "samples", "t") == "cmp"
    assert checkpoint_name(tmp_path / "release-384p" / "samples" / "t", "t") == "release-384p"


def test_record_vote_refusals_leave_nothing(tmp_path):
    _, db = make_study(tmp_path, "v", models=2, prompts=2, raters=2)
    conn = connect(db)
    (t1, r1), (t2, r2) = conn.execute("SELECT token, id FROM raters ORDER BY id").fetchall()
    a1 = conn.execute("SELECT id FROM assignments WHERE rater_id = ? ORDER BY position", (r1,)).fetchone()[0]
    a2 = conn.execute("SELECT id FROM assignments WHERE rater_id = ? ORDER BY position", (r2,)).fetchone()[0]
    good = {"aesthetic": "A", "motion": "same", "semantic": "B"}
    for token, a, answers, status in [("nope", a1, good, 403), (t1, a2, good, 404), (t1, 10**6, good, 404),
                                      (t1, a1, {**good, "motion": "C"}, 422), (t1, a1, {"aesthetic": "A"}, 422)]:
        with pytest.raises(VoteError) as e:
            record_vote(conn, token, a, answers)
        assert e.value.status == status
        assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM votes").fetchone()[0] == 0
    record_vote(conn, t1, a1, good)
    with pytest.raises(VoteError) as e:
        record_vote(conn, t1, a1, good)
    assert e.value.status == 409 and e.value.extra["same_answers"]
    assert conn.execute("SELECT count(*) FROM votes").fetchone()[0] == 1
    # foreign keys are enforced on every connection
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO votes (assignment_id, rater_id, aesthetic, motion, semantic) "
                     "VALUES (?, ?, 'A', 'A', 'A')", (10**6, r1))
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.close()


def test_only_the_study_command_imports_the_study_package():
    src = ROOT / "src" / "pyramid_repro"
    users = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                   if "pyramid_repro.study" in p.read_text() and "study" not in p.relative_to(src).parts[:1])
    assert users == ["commands/study.py"], users
    allowed = ("pyramid_repro.config", "pyramid_repro.layout", "pyramid_repro.provenance",
               "pyramid_repro.eval.uncertainty", "pyramid_repro.data.video_io", "pyramid_repro.study")
    for p in (src / "study").glob("*.py"):
        for m in re.findall(r"^from (pyramid_repro[\w.]*) import", p.read_text(), re.M):
            assert m.startswith(allowed), (p.name, m)


def test_cli_help_explains_the_three_steps(tmp_path):
    r = cli(tmp_path, "--help")
    assert r.returncode == 0 and "study" in r.stdout
    r = cli(tmp_path, "study", "--help")
    assert r.returncode == 0 and all(w in r.stdout for w in ("create", "serve", "report", "study.sqlite"))
    r = cli(tmp_path, "study", "serve", "--help")
    assert r.returncode == 0 and "127.0.0.1" in r.stdout


def _run_cli(capsys, *args: str) -> tuple[int, str]:
    """`pyramid-repro <args>` in this process (faster than a subprocess): exit status and stderr."""
    from pyramid_repro.cli import main

    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """Nonsensical numbers, a 300-character name, a study that is not there and a port in use: exit status 2 and
    one line on stderr each, no traceback."""
    import socket

    results, _ = make_study(tmp_path, "one", models=2, prompts=1, raters=1)
    monkeypatch.setenv("PYRAMID_REPRO_OVERRIDES", json.dumps({"results": str(results)}))
    create = ["study", "create", "--profile", "smoke", "--suite", "t", "--experiments", "pyramid", "fullseq"]
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = holder.getsockname()[1]
    cases = [
        (create + ["--name", "n", "--raters", "2", "--max-prompts", "-3"],
         "--max-prompts -3: expected an integer >= 0"),
        (create + ["--name", "n", "--raters", "0"], "--raters 0: expected an integer >= 1"),
        (create + ["--name", "n", "--raters", "1", "--repeats", "-1"], "--repeats -1"),
        (create + ["--name", "n", "--raters", "1", "--seed", "-5"], "--seed -5"),
        (create + ["--name", "x" * 300, "--raters", "1"], "(300 characters): expected 1 to 64 letters"),
        (create + ["--name", "../up", "--raters", "1"], "expected 1 to 64 letters"),
        (create + ["--name", "n", "--raters", "many"], "invalid int value: 'many'"),
        (["study", "serve", "--profile", "smoke", "--name", "one", "--port", "70000"],
         "--port 70000: expected 0..65535"),
        (["study", "serve", "--profile", "smoke", "--name", "one", "--port", str(busy)],
         f"cannot listen on 127.0.0.1:{busy}"),
        (["study", "report", "--profile", "smoke", "--name", "one", "--resamples", "0"], "--resamples 0"),
        (["study", "report", "--profile", "smoke", "--name", "gone"], "unknown study 'gone'"),
    ]
    try:
        for args, needle in cases:
            rc, err = _run_cli(capsys, *args)
            assert rc == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, (args[-2:], err)
    finally:
        holder.close()
    assert not (results / "smoke" / "studies" / "n").exists()
    # results/ is relative to the working directory, as for every command: the error says where it looked
    monkeypatch.delenv("PYRAMID_REPRO_OVERRIDES")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, err = _run_cli(capsys, *create, "--name", "n", "--raters", "1")
    assert rc == 2 and err.count("\n") == 1 and f"{elsewhere}/results/smoke/pyramid/samples/t" in err
    assert f"working directory {elsewhere}" in err


def test_failed_create_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    """A create that fails on a corrupt mp4 after it has converted other videos removes its database, the WebM
    copies and the folders it made; the error is one line."""
    from pyramid_repro.study import design as study_design

    results = tmp_path / "results"
    texts = [f"a scene number {k}" for k in range(3)]
    for c, m in enumerate(("pyramid", "fullseq")):
        sample_folder(results / "smoke" / m / "samples" / "t", m, texts, colour=c)
    for text in texts:
        (results / "smoke" / "fullseq" / "samples" / "t" / f"{text}-0.mp4").write_bytes(b"not an mp4" * 100)
    converted = []
    real = study_design.transcode_webm

    def counting(src: Path, dst: Path) -> None:
        real(src, dst)
        converted.append(dst)

    monkeypatch.setattr(study_design, "transcode_webm", counting)
    monkeypatch.setenv("PYRAMID_REPRO_OVERRIDES", json.dumps({"results": str(results)}))
    rc, err = _run_cli(capsys, "study", "create", "--profile", "smoke", "--name", "bad", "--suite", "t",
                       "--experiments", "pyramid", "fullseq", "--raters", "2")
    assert rc == 2 and "cannot decode video" in err and err.count("\n") == 1, err
    assert converted and all(not p.exists() for p in converted)  # it had converted some, and removed them
    assert not (results / "smoke" / "studies").exists()
