"""The user study's SQLite database: its design (models, videos, raters, assignments) and every vote.

The paper's user study (Sec. 5, the user-study figure) asks raters to compare two videos of one prompt on three
questions. Here one database file holds a whole study, so a study can be copied, archived and analysed alone.

Durability: WAL journal, ``synchronous=FULL`` (the WAL is fsynced at every COMMIT), foreign keys on, one
transaction per vote. A vote is acknowledged to the rater only after its COMMIT returned, so an acknowledged vote
survives a kill -9 of the server (and a power loss, as far as the disk honours fsync). Duplicates are refused by
the UNIQUE constraint on ``votes.assignment_id``, not by a check before the insert, so two racing requests cannot
both store a vote. Every statement is parameterised.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyramid_repro.config import ConfigError

SCHEMA_VERSION = 1
QUESTIONS = ("aesthetic", "motion", "semantic")  # the paper's three questions, in its order
ANSWERS = ("A", "B", "same")  # A = the left video, B = the right one, as the rater saw them

SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL UNIQUE,
    folder TEXT NOT NULL,
    samples_json TEXT NOT NULL,
    checkpoint TEXT,
    provenance TEXT NOT NULL
);
CREATE TABLE videos (
    id TEXT PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    prompt_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    original TEXT NOT NULL,
    file TEXT NOT NULL,
    media_type TEXT NOT NULL,
    UNIQUE (source_id, prompt_id, sample_index)
);
CREATE TABLE raters (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL
);
CREATE TABLE assignments (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    prompt_id TEXT NOT NULL,
    left_video TEXT NOT NULL REFERENCES videos(id),
    right_video TEXT NOT NULL REFERENCES videos(id),
    repeat_of INTEGER REFERENCES assignments(id),
    UNIQUE (rater_id, position)
);
CREATE TABLE votes (
    id INTEGER PRIMARY KEY,
    assignment_id INTEGER NOT NULL UNIQUE REFERENCES assignments(id),
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    aesthetic TEXT NOT NULL CHECK (aesthetic IN ('A', 'B', 'same')),
    motion TEXT NOT NULL CHECK (motion IN ('A', 'B', 'same')),
    semantic TEXT NOT NULL CHECK (semantic IN ('A', 'B', 'same')),
    created_utc TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX assignments_by_rater ON assignments (rater_id, position);
"""


class VoteError(Exception):
    """A refused vote: `status` is the HTTP status the server answers with, `message` says why."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _pragmas(conn: sqlite3.Connection) -> sqlite3.Connection:
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def create_db(path: Path) -> sqlite3.Connection:
    """A new, empty study database at `path` (WAL mode, schema version set). Refuses to overwrite one."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path}: a study database exists already; choose another --name or delete its folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    _pragmas(conn)
    conn.executescript(SCHEMA)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
    return conn


def connect(path: Path) -> sqlite3.Connection:
    """Open an existing study database (autocommit mode: every write below opens its own transaction)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such study database (expected one written by `pyramid-repro study create`)")
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    _pragmas(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        conn.close()
        raise ConfigError(f"{path}: study schema version {version}, expected {SCHEMA_VERSION}")
    return conn


def get_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    """The study's metadata (name, created_utc, seed, provenance, ...), JSON values decoded."""
    return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}


@dataclass(frozen=True)
class Assignment:
    """One comparison shown to one rater: which video is left, which right (model names are not sent)."""

    id: int
    position: int
    prompt_id: str
    prompt: str
    left_video: str
    right_video: str


def rater_id(conn: sqlite3.Connection, token: str) -> int | None:
    row = conn.execute("SELECT id FROM raters WHERE token = ?", (token,)).fetchone()
    return None if row is None else int(row[0])


def progress(conn: sqlite3.Connection, rater: int) -> tuple[int, int]:
    """(answered, total) assignments of a rater."""
    total = conn.execute("SELECT count(*) FROM assignments WHERE rater_id = ?", (rater,)).fetchone()[0]
    answered = conn.execute("SELECT count(*) FROM votes WHERE rater_id = ?", (rater,)).fetchone()[0]
    return int(answered), int(total)


def next_assignment(conn: sqlite3.Connection, rater: int) -> Assignment | None:
    """The rater's first unanswered assignment in presentation order (where they resume), None when done."""
    row = conn.execute(
        "SELECT a.id, a.position, a.prompt_id, v.prompt, a.left_video, a.right_video FROM assignments a "
        "JOIN videos v ON v.id = a.left_video "
        "WHERE a.rater_id = ? AND NOT EXISTS (SELECT 1 FROM votes w WHERE w.assignment_id = a.id) "
        "ORDER BY a.position LIMIT 1", (rater,)).fetchone()
    return None if row is None else Assignment(*row)


def video_file(conn: sqlite3.Connection, video_id: str) -> tuple[str, str] | None:
    """(file path, media type) of a registered video, None for an unknown id."""
    row = conn.execute("SELECT file, media_type FROM videos WHERE id = ?", (video_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def record_vote(conn: sqlite3.Connection, token: str, assignment_id: int, answers: dict[str, str]) -> int:
    """Store one rater's answers to one assignment in its own transaction; returns the vote id once COMMITted.

    Raises VoteError: 403 for an unknown token, 404 for an assignment that is not this rater's, 409 when the
    assignment has a vote already (the UNIQUE constraint; the stored answers travel in `extra`), 422 for answers
    outside A / B / same. Nothing is stored when it raises."""
    if set(answers) != set(QUESTIONS) or any(answers[q] not in ANSWERS for q in QUESTIONS):
        raise VoteError(422, f"answers must give each of {list(QUESTIONS)} one of {list(ANSWERS)}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        rater = rater_id(conn, token)
        if rater is None:
            raise VoteError(403, "unknown rater token")
        if conn.execute("SELECT 1 FROM assignments WHERE id = ? AND rater_id = ?",
                        (assignment_id, rater)).fetchone() is None:
            raise VoteError(404, f"no assignment {assignment_id} for this rater")
        try:
            cur = conn.execute(
                "INSERT INTO votes (assignment_id, rater_id, aesthetic, motion, semantic) VALUES (?, ?, ?, ?, ?)",
                (assignment_id, rater, answers["aesthetic"], answers["motion"], answers["semantic"]))
        except sqlite3.IntegrityError:
            row = conn.execute("SELECT aesthetic, motion, semantic FROM votes WHERE assignment_id = ?",
                               (assignment_id,)).fetchone()
            stored = dict(zip(QUESTIONS, row)) if row else None
            raise VoteError(409, f"assignment {assignment_id} has a vote already; not stored again",
                            stored=stored, same_answers=stored == {q: answers[q] for q in QUESTIONS}) from None
        vote = int(cur.lastrowid)
        conn.execute("COMMIT")
        return vote
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def votes_table(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every vote with what the analysis needs: rater, prompt, the left and right model, the repeat link and the
    answers as given (A = left)."""
    cur = conn.execute(
        "SELECT w.id, w.assignment_id, a.rater_id, a.prompt_id, a.position, a.repeat_of, "
        "sl.model, sr.model, w.aesthetic, w.motion, w.semantic, w.created_utc FROM votes w "
        "JOIN assignments a ON a.id = w.assignment_id "
        "JOIN videos vl ON vl.id = a.left_video JOIN sources sl ON sl.id = vl.source_id "
        "JOIN videos vr ON vr.id = a.right_video JOIN sources sr ON sr.id = vr.source_id ORDER BY w.id")
    names = ["vote", "assignment", "rater", "prompt_id", "position", "repeat_of", "left_model", "right_model",
             *QUESTIONS, "created_utc"]
    return [dict(zip(names, row)) for row in cur]


def sources_table(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The study's models: sample folder, samples.json, checkpoint and that file's provenance."""
    cur = conn.execute("SELECT model, folder, samples_json, checkpoint, provenance FROM sources ORDER BY id")
    return [{"model": m, "folder": f, "samples_json": s, "checkpoint": c, "provenance": json.loads(p)}
            for m, f, s, c, p in cur]
