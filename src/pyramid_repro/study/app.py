"""The rater web app of a user study (Starlette, served by uvicorn; docs/user_study.md says why).

Routes:

* ``GET /r/<token>``: the rating page of one rater (403 for an unknown token).
* ``GET /api/r/<token>/next``: the rater's progress and first unanswered assignment (where they resume): prompt
  and the two videos' opaque ids, left and right as recorded in the study. Model names are never sent.
* ``POST /api/vote``: JSON ``{"token", "assignment", "aesthetic", "motion", "semantic"}`` with answers
  ``A`` (left), ``B`` (right) or ``same``. 201 after the vote's COMMIT; refusals carry a JSON ``error``: 400 body
  not a JSON object, 401 no token, 403 unknown token, 404 not this rater's assignment, 409 already voted (nothing
  stored twice), 422 fields missing or answers outside A / B / same.
* ``GET /video/<id>``: a registered video by its random id, with HTTP range requests (206 Partial Content); any
  other id or path is 404. File paths come from the database, never from the request.
"""

from __future__ import annotations

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

VIDEO_ID = re.compile(r"^[0-9a-f]{32}$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
MAX_BODY = 16_384  # a vote is a few hundred bytes

# the paper's three questions (Sec. 5, user study), as the page asks them
QUESTION_TEXT = {
    "aesthetic": ("Aesthetic quality", "Which video looks better (detail, colour, no artefacts)?"),
    "motion": ("Motion smoothness", "Which video moves more smoothly and naturally?"),
    "semantic": ("Semantic alignment", "Which video matches the prompt better?"),
}

LABELS = {"A": "A (left)", "B": "B (right)", "same": "Same"}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class StudyApp:
    """The study's routes over one database file; one SQLite connection per worker thread."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        connect(self.db_path).close()  # fails early (ConfigError) for a missing or foreign file
        self._local = threading.local()
        self.app = Starlette(routes=[
            Route("/", self.index),
            Route("/r/{token}", self.page),
            Route("/api/r/{token}/next", self.next_item),
            Route("/api/vote", self.vote, methods=["POST"]),
            Route("/video/{video_id}", self.video),
        ])

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
        if not TOKEN.match(token) or rater_id(self.conn(), token) is None:
            return HTMLResponse("<!doctype html><title>Unknown link</title><p>This rater link is not valid.</p>",
                                status_code=403)
        name = get_meta(self.conn()).get("name", "")
        return HTMLResponse(render_page(token, str(name)))

    def next_item(self, request: Request) -> Response:
        token = request.path_params["token"]
        rater = rater_id(self.conn(), token) if TOKEN.match(token) else None
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
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, f"body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        token = body.get("token") or request.headers.get("x-rater-token")
        if not token:
            return _error(401, "missing rater token")
        if not isinstance(token, str) or not TOKEN.match(token):
            return _error(403, "unknown rater token")
        assignment = body.get("assignment")
        if isinstance(assignment, bool) or not isinstance(assignment, int):
            return _error(422, "'assignment' must be an integer assignment id")
        answers = {q: body.get(q) for q in QUESTIONS}
        bad = [q for q, v in answers.items() if v not in ANSWERS]
        if bad:
            return _error(422, f"answer(s) {bad} missing or not one of {list(ANSWERS)}")
        try:
            # sqlite3 blocks, so the transaction runs on a worker thread; the reply is sent after COMMIT
            vote = await run_in_threadpool(self._record, token, assignment, answers)
        except VoteError as e:
            return _error(e.status, e.message, **e.extra)
        return JSONResponse({"saved": True, "vote": vote, "assignment": assignment}, status_code=201)

    def _record(self, token: str, assignment: int, answers: dict[str, str]) -> int:
        return record_vote(self.conn(), token, assignment, answers)

    def video(self, request: Request) -> Response:
        vid = request.path_params["video_id"]
        found = video_file(self.conn(), vid) if VIDEO_ID.match(vid) else None
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


def serve(db_path: Path, sock: socket.socket) -> None:
    """Serve the study on an already bound socket until interrupted (SIGINT/SIGTERM)."""
    app = StudyApp(db_path).app
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
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
<script>
const CFG = __CONFIG__;
let item = null, answers = {}, current = 0, busy = false;
const $ = (id) => document.getElementById(id);
function mark() {
  CFG.questions.forEach((q, i) => {
    $("q-" + q).classList.toggle("current", i === current);
    for (const a of ["A", "B", "same"]) $("q-" + q + "-" + a).classList.toggle("chosen", answers[q] === a);
  });
}
function status(text, cls) { const s = $("status"); s.textContent = text; s.className = cls || ""; }
async function load() {
  const r = await fetch("/api/r/" + encodeURIComponent(CFG.token) + "/next", {cache: "no-store"});
  const s = await r.json();
  if (!r.ok) { status(s.error || ("error " + r.status), "error"); return; }
  if (s.done) { $("main").hidden = true; $("done").hidden = false; return; }
  item = s.assignment; answers = {}; current = 0;
  $("form").dataset.assignment = item.id;
  $("progress").textContent = (s.answered + 1) + " of " + s.total;
  $("prompt").textContent = "\\u201c" + item.prompt + "\\u201d";
  for (const side of ["left", "right"]) {
    const v = $(side); v.src = item[side]; v.load(); const p = v.play(); if (p) p.catch(() => {});
  }
  mark();
}
function answer(q, a) {
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
  try {
    const r = await fetch("/api/vote", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(Object.assign({token: CFG.token, assignment: item.id}, answers))});
    const body = await r.json().catch(() => ({}));
    if (r.status === 200 || r.status === 201) { status("saved", "saved"); await load(); }
    else if (r.status === 409 && body.same_answers) { status("saved (already recorded)", "saved"); await load(); }
    else status("not saved: " + (body.error || ("HTTP " + r.status)), "error");
  } catch (e) { status("not saved: the server did not answer; press Enter to retry", "error"); }
  finally { busy = false; }
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
