"""The study server over real HTTP (a `pyramid-repro study serve` subprocess): refusals, video serving with
ranges, path traversal, bounded requests (body size and memory, timeouts for incomplete requests), security
headers, the printed rater links, and durability under 20 concurrent raters with a kill -9 in the middle."""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import socket
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from study_helpers import Server, cli, make_study

from pyramid_repro.commands.study import binding, public_origin
from pyramid_repro.config import ConfigError
from pyramid_repro.study.app import MAX_BODY, TOKEN, VIDEO_ID
from pyramid_repro.study.guard import BoundedRequests

TIMEOUT = 3  # the module server's --request-timeout (seconds)


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
    server = Server(results, "s", options=("--request-timeout", str(TIMEOUT), "--public-url", "https://study.example/"))
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


def test_server_prints_public_links(study):
    """--public-url sets the printed rater links; the bound address stays loopback."""
    server, db = study
    assert "127.0.0.1" in server.first_line and "localhost only" in server.first_line
    lines = [server.proc.stdout.readline() for _ in range(1 + len(tokens(db)))]
    assert "rater links" in lines[0]
    assert [ln.strip() for ln in lines[1:]] == [f"https://study.example/r/{t}" for t in tokens(db)]


def test_binding_and_links():
    # loopback is all of 127.0.0.0/8 and ::1, decided from the address, not its spelling
    for host in ("127.0.0.1", "127.0.0.2", "127.255.0.9", "::1"):
        base, notes = binding(host, 8765, None)
        assert "localhost only" in notes[0] and base.startswith("http://") and base.endswith(":8765"), (host, notes)
    base, notes = binding("192.168.1.5", 80, None)
    assert base == "http://192.168.1.5:80" and "reachable from other machines" in notes[0]
    # a wildcard bind: never http://0.0.0.0/ links; the note says to pass --public-url
    for host in ("0.0.0.0", "::"):
        base, notes = binding(host, 8765, None)
        assert "0.0.0.0" not in base and "[::]" not in base and "reachable from other machines" in notes[0]
        assert any("--public-url" in n for n in notes)
        base, notes = binding(host, 8765, "https://study.example")
        assert base == "https://study.example" and len(notes) == 1
    assert public_origin("https://study.example:8443/") == "https://study.example:8443"
    for bad in ("study.example", "ftp://study.example", "https://study.example/pilot", "https://u:p@study.example",
                "https://study.example/?a=1", "https://study.example:99999"):
        with pytest.raises(ConfigError, match="--public-url"):
            public_origin(bad)
    # the patterns match whole strings: no trailing newline
    t = "a" * 32
    assert TOKEN.fullmatch(t) and not TOKEN.fullmatch(t + "\n") and not VIDEO_ID.fullmatch("0" * 32 + "\n")


def test_security_headers_on_every_response(study):
    server, db = study
    t1 = tokens(db)[0]
    item = json.loads(request(server.url, "GET", f"/api/r/{t1}/next")[2])["assignment"]
    responses = [request(server.url, "GET", p) for p in ("/", f"/r/{t1}", f"/api/r/{t1}/next", item["left"],
                                                         "/r/not-a-valid-token", "/video/" + "0" * 32, "/nope")]
    responses.append(request(server.url, "POST", "/api/vote", b"{}", {"Content-Type": "application/json"}))
    responses.append(request(server.url, "POST", "/api/vote", b"x" * (MAX_BODY + 1)))
    assert [r[0] for r in responses] == [200, 200, 200, 200, 403, 404, 404, 401, 413]
    for status, headers, _ in responses:
        csp = headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers.get("x-frame-options") == "DENY" and headers.get("referrer-policy") == "no-referrer"
        assert headers.get("x-content-type-options") == "nosniff"


def test_malformed_votes_get_4xx_and_store_nothing(study):
    """Every class of malformed vote the JSON parser or SQLite would choke on is refused with a 4xx before the
    database; a cross-site form post (text/plain) is refused; the undocumented X-Rater-Token header is ignored."""
    server, db = study
    t1 = tokens(db)[0]
    a1 = assignments(db, t1)[1]
    good = '"aesthetic": "A", "motion": "B", "semantic": "same"'
    vote = lambda assignment: f'{{"token": "{t1}", "assignment": {assignment}, {good}}}'.encode()  # noqa: E731
    before = vote_count(db)
    cases = [
        (vote(2**63), 422), (vote(10**30), 422), (vote(-2**63 - 1), 422), (vote(0), 422), (vote(-1), 422),
        (vote("9" * 5000), 400),  # over Python's 4,300-digit limit
        (vote("[" * 8000 + "]" * 8000), 400),  # nested deeper than the parser's recursion limit
        (vote("NaN"), 400), (vote("-Infinity"), 400), (vote("1e400"), 422), (vote(f"{a1}.0"), 422),
        (vote(f"[{a1}]"), 422), (vote("true"), 422), (vote("null"), 422),
        (vote(a1).replace(b'"same"', b'["same"]'), 422), (vote(a1).replace(b'"same"', b'{"a": 1}'), 422),
        (vote(a1).replace(t1.encode(), t1.encode() + b"\\n"), 403), (vote(a1).replace(t1.encode(), b"\\ud800"), 403),
        (vote(a1).replace(b'"same"', b'"\\ud800"'), 422), (b"\xff\xfe{}", 400), (b'"' + b"x" * 100, 400),
    ]
    for body, want in cases:
        status, _, raw = request(server.url, "POST", "/api/vote", body, {"Content-Type": "application/json"})
        assert status == want, (body[:120], status, raw)
        assert json.loads(raw)["error"], raw
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        status, _, raw = request(server.url, "POST", "/api/vote", vote(a1), {"Content-Type": ctype} if ctype else {})
        assert status == 415 and "application/json" in json.loads(raw)["error"], (ctype, status, raw)
    status, _, _ = request(server.url, "POST", "/api/vote", f'{{"assignment": {a1}, {good}}}'.encode(),
                           {"Content-Type": "application/json; charset=utf-8", "X-Rater-Token": t1})
    assert status == 401
    assert vote_count(db) == before
    status, _, _ = request(server.url, "POST", "/api/vote", vote(a1), {"Content-Type": "Application/JSON"})
    assert status == 201 and vote_count(db) == before + 1


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def send_large_body(port: int, chunked: bool, total: int) -> tuple[bytes, int]:
    """POST a `total`-byte vote body, 1 MiB at a time, stopping when the server answers or closes; returns (what it
    answered, bytes sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}".encode()
    s.sendall(b"POST /api/vote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n")
    block, sent, answer = b"x" * (1 << 20), 0, b""
    wait = 0 if chunked else 2  # a Content-Length over the limit is answered before the body is sent
    try:
        while sent < total and not select.select([s], [], [], 0 if sent else wait)[0]:
            s.sendall(b"100000\r\n" + block + b"\r\n" if chunked else block)
            sent += len(block)
        answer = s.recv(65536)
    except OSError:  # the server closed the connection while the body was still coming
        pass
    finally:
        s.close()
    return answer, sent


def test_oversized_body_refused_without_reading_it(study):
    """A 64 MiB body is refused from its Content-Length, and when chunked after the limit and one read; the
    server's memory does not grow with it (it did by about twice the body before)."""
    server, _ = study
    assert request(server.url, "POST", "/api/vote", b"x" * (MAX_BODY + 1))[0] == 413  # warm up the refusal path
    before = rss_mb(server.proc.pid)
    total = 64 << 20
    answer, sent = send_large_body(server.port, chunked=False, total=total)
    assert answer.startswith(b"HTTP/1.1 413") and sent == 0, (answer[:100], sent)  # answered before any body byte
    answer, sent = send_large_body(server.port, chunked=True, total=total)
    assert sent < total and (answer == b"" or answer.startswith(b"HTTP/1.1 413")), (answer[:100], sent)
    growth = rss_mb(server.proc.pid) - before
    print(f"server RSS {before:.0f} MB, growth {growth:.1f} MB after two 64 MiB bodies (chunked: {sent >> 20} MiB "
          "sent before the server closed)")
    assert growth < 8, growth
    assert request(server.url, "GET", "/")[0] == 200


def test_bounded_requests_reads_at_most_limit_plus_one_chunk():
    """In process: an endless chunked body is read only until it passes the limit; a Content-Length over it is
    refused without reading; a body that stops coming is refused after the timeout. The app sees none of them."""
    chunk, limit = 4096, 10_000

    def run(headers: list, receive, timeout: float = 5) -> tuple[list, bool]:
        sent, reached = [], []

        async def app(scope, receive, send):
            reached.append(True)

        async def send(message):
            sent.append(message)

        guard = BoundedRequests(app, limit, timeout, [("X-Frame-Options", "DENY")])
        asyncio.run(guard({"type": "http", "headers": headers}, receive, send))
        return sent, bool(reached)

    read = []

    async def endless():
        read.append(chunk)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    sent, reached = run([(b"transfer-encoding", b"chunked")], endless)
    assert sent[0]["status"] == 413 and not reached and sum(read) <= limit + chunk
    headers = dict(sent[0]["headers"])
    assert headers[b"connection"] == b"close" and headers[b"x-frame-options"] == b"DENY"

    async def never_called():
        raise AssertionError("the body was read")

    sent, reached = run([(b"content-length", str(limit + 1).encode())], never_called)
    assert sent[0]["status"] == 413 and not reached

    async def stalled():
        await asyncio.sleep(60)

    t0 = time.time()
    sent, reached = run([(b"content-length", b"10")], stalled, timeout=0.2)
    assert sent[0]["status"] == 408 and not reached and time.time() - t0 < 5


def test_incomplete_requests_closed_after_timeout(study):
    """Connections that stop mid-headers, drip their headers a byte at a time, stop mid-body or send nothing are
    all closed about --request-timeout seconds in (uvicorn alone kept them open)."""
    server, _ = study
    head = b"POST /api/vote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    cases = {"mid-headers": head[:30], "mid-body": head + b"Content-Length: 100\r\n\r\n{\"tok", "nothing": b"",
             "drip": head}
    closed: dict[str, tuple[float, bytes]] = {}

    def client(name: str, data: bytes) -> None:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT + 10)
        t0, got = time.time(), b""
        try:
            if name == "drip":  # one byte every 0.25 s: each byte arrives long before any idle timeout would fire
                for byte in data:
                    s.sendall(bytes([byte]))
                    if select.select([s], [], [], 0.25)[0]:
                        break
            else:
                s.sendall(data)
            while chunk := s.recv(4096):
                got += chunk
        except OSError:
            pass
        finally:
            s.close()
        closed[name] = (time.time() - t0, got)

    threads = [threading.Thread(target=client, args=item) for item in cases.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT + 15)
    assert set(closed) == set(cases)
    for name, (elapsed, got) in closed.items():
        assert TIMEOUT - 0.5 < elapsed < TIMEOUT + 5, (name, elapsed)
    assert closed["mid-body"][1].startswith(b"HTTP/1.1 408") and b"connection: close" in closed["mid-body"][1]
    assert closed["mid-headers"][1] == b"" and closed["nothing"][1] == b""
    assert request(server.url, "GET", "/")[0] == 200


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
