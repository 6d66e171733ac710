"""The study server over real HTTP (a `pyramid-repro study serve` subprocess): refusals, video serving with
ranges, path traversal, and durability under 20 concurrent raters with a kill -9 in the middle."""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from study_helpers import Server, cli, make_study


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 10) -> tuple[int, dict, bytes]:
    host, port = url.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def post_vote(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, raw = request(url, "POST", "/api/vote", body, {"Content-Type": "application/json"})
    return status, json.loads(raw)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    results, db = make_study(tmp_path_factory.mktemp("srv"), "s", models=2, prompts=3, raters=2, repeats=1)
    server = Server(results, "s")
    yield server, db
    server.stop()


def tokens(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [t for (t,) in c.execute("SELECT token FROM raters ORDER BY id")]


def assignments(db: Path, token: str) -> list[int]:
    with sqlite3.connect(db) as c:
        return [a for (a,) in c.execute("SELECT a.id FROM assignments a JOIN raters r ON r.id = a.rater_id "
                                        "WHERE r.token = ? ORDER BY a.position", (token,))]


def vote_count(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT count(*) FROM votes").fetchone()[0]


def test_database_settings(study):
    _, db = study
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        # the UNIQUE constraint that refuses duplicates lives in the schema itself
        sql = c.execute("SELECT sql FROM sqlite_master WHERE name = 'votes'").fetchone()[0]
        assert "assignment_id INTEGER NOT NULL UNIQUE" in sql


def test_server_prints_localhost_binding(study):
    server, _ = study
    assert "127.0.0.1" in server.first_line and "localhost only" in server.first_line


def test_refusals_store_nothing(study):
    server, db = study
    t1, t2 = tokens(db)
    a1, a2 = assignments(db, t1)[0], assignments(db, t2)[0]
    good = {"aesthetic": "A", "motion": "B", "semantic": "same"}
    before = vote_count(db)
    cases = [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        ({"assignment": a1, **good}, 401),  # no token
        ({"token": "x" * 32, "assignment": a1, **good}, 403),  # unknown token
        ({"token": "../../etc", "assignment": a1, **good}, 403),
        ({"token": t1, "assignment": 999999, **good}, 404),  # unknown assignment
        ({"token": t1, "assignment": a2, **good}, 404),  # another rater's assignment
        ({"token": t1, "assignment": a1, "aesthetic": "A", "motion": "B"}, 422),  # a question missing
        ({"token": t1, "assignment": a1, **good, "semantic": "left"}, 422),  # answer outside A/B/same
        ({"token": t1, "assignment": "1", **good}, 422),
        ({"token": t1, "assignment": a1, **good, "pad": "x" * 20_000}, 413),  # oversized body
    ]
    for payload, want in cases:
        status, body = post_vote(server.url, payload)
        assert status == want, (payload, status, body)
        assert isinstance(body.get("error"), str) and body["error"], body
    assert vote_count(db) == before
    status, body = post_vote(server.url, {"token": t1, "assignment": a1, **good})
    assert status == 201 and body["saved"] is True
    # a replay (same or different answers) is refused and not stored twice
    status, body = post_vote(server.url, {"token": t1, "assignment": a1, **good})
    assert status == 409 and body["same_answers"] is True and "error" in body
    status, body = post_vote(server.url, {"token": t1, "assignment": a1, **good, "motion": "A"})
    assert status == 409 and body["same_answers"] is False
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT aesthetic, motion, semantic FROM votes WHERE assignment_id = ?", (a1,)).fetchall()
    assert rows == [("A", "B", "same")]
    assert vote_count(db) == before + 1


def test_resume_and_progress(study):
    server, db = study
    t2 = tokens(db)[1]
    ids = assignments(db, t2)
    first = json.loads(request(server.url, "GET", f"/api/r/{t2}/next")[2])
    assert first["assignment"]["id"] == ids[0] and first["total"] == len(ids)
    assert "model" not in json.dumps(first) and "pyramid" not in json.dumps(first)  # model names hidden
    assert post_vote(server.url, {"token": t2, "assignment": ids[0], "aesthetic": "B", "motion": "B",
                                  "semantic": "B"})[0] == 201
    nxt = json.loads(request(server.url, "GET", f"/api/r/{t2}/next")[2])
    assert nxt["assignment"]["id"] == ids[1] and nxt["answered"] == 1
    assert request(server.url, "GET", "/api/r/not-a-valid-token/next")[0] == 403
    assert request(server.url, "GET", "/r/not-a-valid-token")[0] == 403
    status, _, page = request(server.url, "GET", f"/r/{t2}")
    assert status == 200 and b"<video" in page and b"Enter" in page


def test_videos_served_with_ranges_and_nothing_else(study):
    server, db = study
    t1 = tokens(db)[0]
    item = json.loads(request(server.url, "GET", f"/api/r/{t1}/next")[2])["assignment"]
    status, headers, full = request(server.url, "GET", item["left"])
    assert status == 200 and headers["content-type"] == "video/webm" and full[:4] == b"\x1a\x45\xdf\xa3"
    assert headers.get("accept-ranges") == "bytes"
    status, headers, part = request(server.url, "GET", item["left"], headers={"Range": "bytes=4-19"})
    assert status == 206 and part == full[4:20]
    assert headers["content-range"] == f"bytes 4-19/{len(full)}"
    with sqlite3.connect(db) as c:
        original = c.execute("SELECT original FROM videos LIMIT 1").fetchone()[0]
    for path in ["/video/../../etc/passwd", "/video/..%2F..%2Fetc%2Fpasswd", "/video/%2e%2e/%2e%2e/etc/passwd",
                 "/video/" + "0" * 32, "/video/" + item["left"].rsplit("/", 1)[1].upper(), "/video/",
                 "/video/%2Fetc%2Fpasswd", "/video/" + quote(original, safe=""), "/etc/passwd",
                 "/video/..%252F..%252Fetc%252Fpasswd", "/../../etc/passwd"]:
        status, _, body = request(server.url, "GET", path)
        assert status == 404, (path, status)
        assert b"root:" not in body


def test_unknown_study_is_a_clear_error(tmp_path):
    r = cli(tmp_path / "results", "study", "serve", "--profile", "smoke", "--name", "nope")
    assert r.returncode == 2 and "unknown study 'nope'" in r.stderr and "study.sqlite" in r.stderr
    r = cli(tmp_path / "results", "study", "create", "--profile", "smoke", "--name", "x", "--checkpoint",
            str(tmp_path), str(tmp_path), "--raters", "1")
    assert r.returncode == 2 and "no samples.json" in r.stderr and str(tmp_path) in r.stderr


def test_load_with_kill_9(tmp_path):
    """20 concurrent raters post 2,000 votes; the server is killed with SIGKILL in the middle and restarted on
    the same port. Every acknowledged (201) vote is in the database with its answers, none twice."""
    results, db = make_study(tmp_path, "load", models=2, prompts=51, raters=20, repeats=49)
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT r.token, a.id FROM assignments a JOIN raters r ON r.id = a.rater_id "
                         "ORDER BY r.id, a.position").fetchall()
    per_rater = {}
    for t, a in rows:
        per_rater.setdefault(t, []).append(a)
    assert len(per_rater) == 20 and sum(map(len, per_rater.values())) == 2000
    server = Server(results, "load")
    acked: dict[int, tuple[str, str, str]] = {}
    refused_dupes, errors, retries, lock = [], [], [], threading.Lock()
    answers = ["A", "B", "same"]
    half = threading.Event()

    def rater(token: str, ids: list[int]) -> None:
        for n, a in enumerate(ids):
            ans = (answers[a % 3], answers[(a // 3) % 3], answers[(a // 9) % 3])
            payload = {"token": token, "assignment": a, "aesthetic": ans[0], "motion": ans[1], "semantic": ans[2]}
            t0 = time.time()
            while time.time() - t0 < 30:
                try:
                    status, body = post_vote(server.url, payload)
                except (OSError, http.client.HTTPException, json.JSONDecodeError):
                    retries.append(a)
                    time.sleep(0.05)  # server down: retry the same vote
                    continue
                with lock:
                    if status == 201:
                        acked[a] = ans
                        if len(acked) >= 1000:
                            half.set()
                    elif status == 409:
                        refused_dupes.append(a)  # committed before the kill, reply lost: not stored twice
                    else:
                        errors.append((a, status, body))
                break

    threads = [threading.Thread(target=rater, args=(t, ids)) for t, ids in per_rater.items()]
    t_start = time.time()
    for th in threads:
        th.start()
    try:
        assert half.wait(60), "the first 1000 votes took too long"
        with lock:
            acked_before_kill = dict(acked)
        server.kill()
        with sqlite3.connect(db) as c:
            stored = {a: (x, y, z) for a, x, y, z in c.execute(
                "SELECT assignment_id, aesthetic, motion, semantic FROM votes")}
        # nothing acknowledged before the kill -9 is lost
        assert all(stored.get(a) == ans for a, ans in acked_before_kill.items())
        server = Server(results, "load", port=server.port)
        for th in threads:
            th.join(90)
    finally:
        server.stop()
    elapsed = time.time() - t_start
    assert not errors, errors[:5]
    with sqlite3.connect(db) as c:
        stored_rows = c.execute("SELECT assignment_id, aesthetic, motion, semantic FROM votes").fetchall()
    stored = {a: (x, y, z) for a, x, y, z in stored_rows}
    assert len(stored_rows) == len(stored)  # none twice
    assert all(stored.get(a) == ans for a, ans in acked.items())  # every acknowledged vote is there
    assert set(stored) == set(acked) | set(refused_dupes)
    assert len(stored) == 2000
    assert retries, "the kill -9 did not interrupt any request"
    print(f"load: {len(acked)} acknowledged, {len(refused_dupes)} committed before the kill with the reply lost "
          f"(409 on retry), {len(acked_before_kill)} acknowledged before kill -9, {len(retries)} requests failed "
          f"while the server was down and were retried, {len(stored_rows)} rows, "
          f"{elapsed:.1f} s")
    assert elapsed < 60
