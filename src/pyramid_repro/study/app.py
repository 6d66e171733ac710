"""The rater web app of a user study (Starlette, served by uvicorn; docs/user_study.md says why).

Routes:

* ``GET /r/<token>``: the rating page of one rater (403 for an unknown token).
* ``GET /api/r/<token>/next``: the rater's progress and first unanswered assignment (where they resume): prompt
  and the two videos' opaque ids, left and right as recorded in the study. Model names are never sent.
* ``POST /api/vote``: ``Content-Type: application/json``, body ``{"token", "assignment", "aesthetic", "motion",
  "semantic"}`` with answers ``A`` (left), ``B`` (right) or ``same``. 201 after the vote's COMMIT; refusals carry
  a JSON ``error``: 400 body not a JSON object, 401 no token, 403 unknown token, 404 not this rater's assignment,
  409 already voted (nothing stored twice), 415 not ``application/json``, 422 fields missing, an assignment that
  is not an integer from 1 to 2**63 - 1, or answers outside A / B / same.
* ``GET /video/<id>``: a registered video by its random id, with HTTP range requests (206 Partial Content); any
  other id or path is 404. File paths come from the database, never from the request.

Every request passes `guard.BoundedRequests` first (body size and time limits: 413, 408), and every response
carries `SECURITY_HEADERS`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from pyramid_repro.study.db import ANSWERS, QUESTIONS, VoteError, connect, get_meta, next_assignment, progress, \
    rater_id, record_vote, video_file
from pyramid_repro.study.guard import BoundedRequests, header_deadline_protocol

# matched with fullmatch: `$` would admit a trailing newline
VIDEO_ID = re.compile(r"[0-9a-f]{32}")
TOKEN = re.compile(r"[A-Za-z0-9_-]{8,128}")
MAX_BODY = 16_384  # a vote is a few hundred bytes; no route takes a larger body
MAX_ID = 2**63 - 1  # SQLite's largest integer: assignment ids are 1 .. MAX_ID
REQUEST_TIMEOUT = 15.0  # seconds a request may take to send its headers, and then its body

# the paper's three questions (Sec. 5, user study), as the page asks them
QUESTION_TEXT = {
    "aesthetic": ("Aesthetic quality", "Which video looks better (detail, colour, no artefacts)?"),
    "motion": ("Motion smoothness", "Which video moves more smoothly and naturally?"),
    "semantic": ("Semantic alignment", "Which video matches the prompt better?"),
}

LABELS = {"A": "A (left)", "B": "B (right)", "same": "Same"}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_vote(content_type: str | None, raw: bytes) -> tuple[str, int, dict[str, str]]:
    """(token, assignment id, answers) of a vote request, every type and range checked before the database sees
    it; a VoteError carries the refusal (400, 401, 403, 415, 422) otherwise."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise VoteError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")
    try:
        # strict JSON: no NaN/Infinity; Python refuses integers over 4,300 digits (ValueError)
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise VoteError(400, "body is not a vote: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise VoteError(400, f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise VoteError(400, "body must be a JSON object")
    token = body.get("token")
    if not token:
        raise VoteError(401, "missing rater token")
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise VoteError(403, "unknown rater token")
    assignment = body.get("assignment")
    if isinstance(assignment, bool) or not isinstance(assignment, int) or not 1 <= assignment <= MAX_ID:
        raise VoteError(422, f"'assignment' must be an assignment id, an integer from 1 to {MAX_ID}")
    answers = {q: body.get(q) for q in QUESTIONS}
    bad = [q for q, v in answers.items() if not isinstance(v, str) or v not in ANSWERS]
    if bad:
        raise VoteError(422, f"answer(s) {bad} missing or not one of {list(ANSWERS)}")
    return token, assignment, answers


class StudyApp:
    """The study's routes over one database file; one SQLite connection per worker thread."""

    def __init__(self, db_path: Path, request_timeout: float = REQUEST_TIMEOUT):
        self.db_path = Path(db_path)
        connect(self.db_path).close()  # fails early (ConfigError) for a missing or foreign file
        self._local = threading.local()
        self.routes = Starlette(routes=[
            Route("/", self.index),
            Route("/r/{token}", self.page),
            Route("/api/r/{token}/next", self.next_item),
            Route("/api/vote", self.vote, methods=["POST"]),
            Route("/video/{video_id}", self.video),
        ])
        self.app = BoundedRequests(self.routes, MAX_BODY, request_timeout, SECURITY_HEADERS)

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = connect(self.db_path)
        return c

    def index(self, request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>User study</title><p>This server runs a video user study. "
                            "Open the rater link you were given.</p>")

    def page(self, request: Request) -> Response:
        token = request.path_params["token"]
        if not TOKEN.fullmatch(token) or rater_id(self.conn(), token) is None:
            return HTMLResponse("<!doctype html><title>Unknown link</title><p>This rater link is not valid.</p>",
                                status_code=403)
        name = get_meta(self.conn()).get("name", "")
        return HTMLResponse(render_page(token, str(name)))

    def next_item(self, request: Request) -> Response:
        token = request.path_params["token"]
        rater = rater_id(self.conn(), token) if TOKEN.fullmatch(token) else None
        if rater is None:
            return _error(403, "unknown rater token")
        answered, total = progress(self.conn(), rater)
        a = next_assignment(self.conn(), rater)
        body: dict[str, Any] = {"answered": answered, "total": total, "done": a is None}
        if a is not None:
            body["assignment"] = {"id": a.id, "position": a.position, "prompt": a.prompt,
                                  "left": f"/video/{a.left_video}", "right": f"/video/{a.right_video}"}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def vote(self, request: Request) -> Response:
        # the body is complete and within MAX_BODY here (BoundedRequests)
        try:
            token, assignment, answers = parse_vote(request.headers.get("content-type"), await request.body())
            # sqlite3 blocks, so the transaction runs on a worker thread; the reply is sent after COMMIT
            vote = await run_in_threadpool(self._record, token, assignment, answers)
        except VoteError as e:
            return _error(e.status, e.message, **e.extra)
        return JSONResponse({"saved": True, "vote": vote, "assignment": assignment}, status_code=201)

    def _record(self, token: str, assignment: int, answers: dict[str, str]) -> int:
        return record_vote(self.conn(), token, assignment, answers)

    def video(self, request: Request) -> Response:
        vid = request.path_params["video_id"]
        found = video_file(self.conn(), vid) if VIDEO_ID.fullmatch(vid) else None
        if found is None or not Path(found[0]).is_file():
            return _error(404, "no such video")
        # FileResponse answers Range requests with 206 Partial Content and advertises Accept-Ranges: bytes
        return FileResponse(found[0], media_type=found[1], headers={"Cache-Control": "private, max-age=3600"})


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(256)
    sock.set_inheritable(True)
    return sock


def serve(db_path: Path, sock: socket.socket, request_timeout: float = REQUEST_TIMEOUT) -> None:
    """Serve the study on an already bound socket until interrupted (SIGINT/SIGTERM). A request has
    `request_timeout` seconds for its headers (from its first byte) and as long again for its body."""
    app = StudyApp(db_path, request_timeout).app
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30,
                            http=header_deadline_protocol(request_timeout), ws="none")
    uvicorn.Server(config).run(sockets=[sock])


def render_page(token: str, name: str) -> str:
    """The rating page: two looping muted videos side by side, the prompt, the three questions, progress."""
    questions = "\n".join(
        f'<div class="q" id="q-{q}" data-q="{q}"><div class="qt"><b>{i + 1}. {title}</b> '
        f'<span>{text}</span></div><div class="opts">'
        + "".join(f'<button type="button" id="q-{q}-{a}" data-q="{q}" data-a="{a}">'
                  f'{LABELS[a]}</button>' for a in ANSWERS)
        + "</div></div>"
        for i, (q, (title, text)) in enumerate(QUESTION_TEXT.items()))
    # a JSON data block, not script: the page's one script is constant, so its hash can be in the CSP
    cfg = json.dumps({"token": token, "questions": list(QUESTIONS)}).replace("<", "\\u003c")
    return PAGE.replace("__QUESTIONS__", questions).replace("__CONFIG__", cfg).replace(
        "__NAME__", name.replace("&", "&amp;").replace("<", "&lt;"))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Video user study</title>
<style>
body { font-family: sans-serif; margin: 1em 2em; background: #fafafa; color: #222; }
#videos { display: flex; gap: 2em; justify-content: center; }
.pane { text-align: center; }
.pane h2 { margin: 0.2em; }
video { width: 336px; height: 336px; background: #000; object-fit: contain; image-rendering: pixelated; }
#prompt { font-size: 1.2em; text-align: center; margin: 0.6em; }
.q { display: flex; justify-content: space-between; align-items: center; max-width: 820px; margin: 0.3em auto;
     padding: 0.4em 0.8em; border: 2px solid #ddd; border-radius: 6px; background: #fff; }
.q.current { border-color: #36c; }
.qt { flex: 1; } .opts { white-space: nowrap; }
.opts button { font-size: 1em; margin-left: 0.4em; padding: 0.3em 0.9em; }
.opts button.chosen { background: #36c; color: #fff; }
#bar { max-width: 820px; margin: 0.8em auto; display: flex; justify-content: space-between; align-items: center; }
#status.saved { color: #080; } #status.error { color: #b00; }
#help { max-width: 820px; margin: 0.5em auto; font-size: 0.9em; color: #555; }
kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 0.3em; background: #eee; }
</style></head>
<body>
<h1>Which video is better? <small>(study __NAME__)</small></h1>
<div id="main">
<div id="progress">loading...</div>
<div id="prompt"></div>
<div id="videos">
  <div class="pane"><h2>A</h2><video id="left" loop muted autoplay playsinline preload="auto"></video></div>
  <div class="pane"><h2>B</h2><video id="right" loop muted autoplay playsinline preload="auto"></video></div>
</div>
<form id="form" data-assignment="">
__QUESTIONS__
<div id="bar"><button type="submit" id="submit">Submit (Enter)</button><span id="status"></span></div>
</form>
</div>
<div id="done" hidden><h2>All done, thank you!</h2><p>Every comparison of this link is answered and saved.</p></div>
<p id="help">Keyboard: <kbd>A</kbd> or <kbd>1</kbd> = left video better, <kbd>B</kbd> or <kbd>2</kbd> = right
video better, <kbd>S</kbd> or <kbd>3</kbd> = about the same, for the highlighted question (then the next question
is highlighted); <kbd>&uarr;</kbd>/<kbd>&darr;</kbd> move between questions; <kbd>Enter</kbd> submits.
Answers are saved when "saved" appears; you can close the page and come back to the same link later.</p>
<script type="application/json" id="config">__CONFIG__</script>
<script>
const CFG = JSON.parse(document.getElementById("config").textContent);
let item = null, number = 0, answers = {}, current = 0, busy = false;
const $ = (id) => document.getElementById(id);
function mark() {
  CFG.questions.forEach((q, i) => {
    $("q-" + q).classList.toggle("current", i === current);
    for (const a of ["A", "B", "same"]) $("q-" + q + "-" + a).classList.toggle("chosen", answers[q] === a);
  });
}
function status(text, cls) { const s = $("status"); s.textContent = text; s.className = cls || ""; }
// shows the rater's next unanswered comparison (the server's state, whatever other tabs did); the status line is
// cleared for it, then set to `note` (what became of the previous one) until the first answer is given here
async function load(note, cls) {
  let r, s;
  try {
    r = await fetch("/api/r/" + encodeURIComponent(CFG.token) + "/next", {cache: "no-store"});
    s = await r.json();
  } catch (e) {
    status((note ? note + "; " : "") + "the next comparison did not load (the server did not answer): reload the "
           + "page", "error");
    return;
  }
  if (!r.ok) { status(s.error || ("error " + r.status), "error"); return; }
  if (s.done) { $("main").hidden = true; $("done").hidden = false; return; }
  item = s.assignment; answers = {}; current = 0; number = s.answered + 1;
  status(note || "", cls);
  $("form").dataset.assignment = item.id;
  $("progress").textContent = number + " of " + s.total;
  $("prompt").textContent = "\\u201c" + item.prompt + "\\u201d";
  for (const side of ["left", "right"]) {
    const v = $(side); v.src = item[side]; v.load(); const p = v.play(); if (p) p.catch(() => {});
  }
  mark();
}
function answer(q, a) {
  status("");  // an answer here ends the note about the previous comparison
  answers[q] = a;
  const next = CFG.questions.findIndex((x) => !(x in answers));
  current = next < 0 ? CFG.questions.indexOf(q) : next;
  mark();
}
async function submit() {
  if (busy || !item) return;
  const missing = CFG.questions.filter((q) => !(q in answers));
  if (missing.length) { status("answer all three questions first", "error"); return; }
  busy = true; status("saving...", "");
  const n = number;
  let r, body;
  try {
    r = await fetch("/api/vote", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(Object.assign({token: CFG.token, assignment: item.id}, answers))});
    body = await r.json().catch(() => ({}));
  } catch (e) {
    status("not saved: the server did not answer; press Enter to retry", "error");
    busy = false;
    return;
  }
  try {
    if (r.status === 201) await load("comparison " + n + " saved", "saved");
    else if (r.status === 409 && body.same_answers) {
      await load("comparison " + n + " saved (already recorded)", "saved");
    }
    else if (r.status === 409) {
      await load("comparison " + n + " was already answered, in another tab or window with this link: that answer "
                 + "is kept and this one was not saved. Go on with the comparison shown now, and keep the link open "
                 + "in one tab only", "error");
    }
    else status("not saved: " + (body.error || ("HTTP " + r.status)), "error");
  } finally { busy = false; }
}
document.querySelectorAll(".opts button").forEach((b) =>
  b.addEventListener("click", () => { answer(b.dataset.q, b.dataset.a); }));
$("form").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase(), q = CFG.questions[current];
  const map = {a: "A", 1: "A", b: "B", 2: "B", s: "same", 3: "same"};
  if (k in map) { answer(q, map[k]); e.preventDefault(); }
  else if (k === "arrowdown") { current = Math.min(current + 1, 2); mark(); e.preventDefault(); }
  else if (k === "arrowup") { current = Math.max(current - 1, 0); mark(); e.preventDefault(); }
  else if (k === "enter") { submit(); e.preventDefault(); }
});
load();
</script>
</body></html>
"""


def _csp_hash(tag: str) -> str:
    """'sha256-...' of the page's one inline <tag> element (the CSP allows exactly that script or style)."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", PAGE, re.S)
    if len(found) != 1:
        raise AssertionError(f"expected one plain <{tag}> in PAGE, found {len(found)}")
    return "'sha256-" + base64.b64encode(hashlib.sha256(found[0].encode()).digest()).decode() + "'"


# on every response: scripts and styles only the page's own (by hash), media and requests to this origin only, no
# framing (clickjacking), no Referer (the rater link carries the token), no content-type sniffing
SECURITY_HEADERS = [
    ("Content-Security-Policy", f"default-src 'none'; script-src {_csp_hash('script')}; "
     f"style-src {_csp_hash('style')}; media-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; "
     "form-action 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
]
