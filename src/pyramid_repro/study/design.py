"""Building a user study from sampled videos: which pairs each rater sees, in which order, on which side.

Following the paper's user study (Sec. 5 and its user-study figure), a comparison shows two models' videos of the
same prompt. For every pair of models and every prompt all models have sampled, each rater sees one comparison
(a crossed design: every rater judges every item, which the bootstrap over raters and prompts and the agreement
statistics need). Which model is on the left is balanced per item across raters (half see it left, half right,
shuffled) and recorded per assignment; the presentation order is shuffled per rater. Optional repeats show a rater
some items a second time, later and with the sides swapped, to measure their consistency.

The project's sample videos are lossless RGB H.264 (High 4:4:4 Predictive, data/video_io.py), which browsers
(Debian's Chromium has no H.264 at all) cannot play, so every registered video is re-encoded once, at create
time, to VP9 in WebM under the study folder; the server serves only those copies.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from pyramid_repro.config import ConfigError
from pyramid_repro.data.video_io import encode_video, read_video
from pyramid_repro.provenance import utc_now
from pyramid_repro.study.db import create_db

WEBM = "video/webm"


@dataclass
class SampleSet:
    """One model's sampled videos: a samples folder written by `pyramid-repro sample` or `compare`."""

    model: str
    folder: Path
    index: Path
    samples: list[dict[str, Any]]
    checkpoint: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def by_prompt(self) -> dict[str, dict[int, dict[str, Any]]]:
        out: dict[str, dict[int, dict[str, Any]]] = {}
        for s in self.samples:
            out.setdefault(str(s["prompt_id"]), {})[int(s["sample_index"])] = s
        return out


def find_samples_json(folder: Path) -> Path:
    """samples.json of a sample folder: in it, or in its samples/ (a compare folder) or samples/<suite>/."""
    folder = Path(folder)
    for cand in (folder / "samples.json", folder / "samples" / "samples.json"):
        if cand.is_file():
            return cand
    found = sorted((folder / "samples").glob("*/samples.json")) if (folder / "samples").is_dir() else []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ConfigError(f"{folder}: several suites under samples/ ({', '.join(p.parent.name for p in found)}); "
                          "pass the one samples/<suite> folder to use")
    raise ConfigError(f"{folder}: no samples.json (expected a folder written by `pyramid-repro sample` or "
                      "`pyramid-repro compare`)")


def load_sample_set(folder: Path, model: str) -> SampleSet:
    """Read a samples folder's samples.json; every video it lists must exist."""
    index = find_samples_json(folder)
    try:
        doc = json.loads(index.read_text())
        samples = list(doc["samples"])
        missing = [k for s in samples for k in ("prompt_id", "prompt", "sample_index", "path") if k not in s]
        if missing:
            raise KeyError(missing[0])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{index}: not a samples.json (expected 'samples' with prompt_id, prompt, sample_index, "
                          f"path per video): {type(e).__name__}: {e}") from None
    if not samples:
        raise ConfigError(f"{index}: lists no videos")
    for s in samples:
        if not (index.parent / s["path"]).is_file():
            raise ConfigError(f"{index}: video {s['path']!r} listed but not found in {index.parent}")
    return SampleSet(model, index.parent, index, samples, doc.get("checkpoint"), doc.get("provenance") or {})


def common_prompts(sets: list[SampleSet]) -> list[str]:
    """Prompt ids every model has sampled, in the first model's order. A ConfigError names the folders when
    there is none."""
    maps = [s.by_prompt() for s in sets]
    common = [p for p in maps[0] if all(p in m for m in maps[1:])]
    if not common:
        raise ConfigError("no prompt is sampled by every model of the study: "
                          + "; ".join(f"{s.model}: {s.index} ({len(m)} prompts)" for s, m in zip(sets, maps)))
    return common


@dataclass(frozen=True)
class Item:
    """A comparison to judge: two models (in the study's order) on one prompt."""

    model_a: int
    model_b: int
    prompt_id: str


def design(n_models: int, prompts: list[str], raters: int, repeats: int, seed: int
           ) -> list[list[tuple[Item, bool, int | None]]]:
    """Per rater, the list of (item, a_on_left, repeat_of) in presentation order. `repeat_of` is the position of
    the first showing of a repeated item (shown again with the sides swapped), None for a first showing.

    Every rater gets every item once. For each item, `a_on_left` is true for half of the raters (the odd one out
    alternating between items), shuffled; positions are shuffled per rater; repeats come after their original,
    never right after it."""
    if raters < 1:
        raise ConfigError(f"--raters {raters}: expected at least 1")
    if n_models < 2:
        raise ConfigError(f"a study compares at least two models, got {n_models}")
    items = [Item(a, b, p) for a, b in combinations(range(n_models), 2) for p in prompts]
    if not 0 <= repeats <= len(items) - 1:
        raise ConfigError(f"--repeats {repeats}: expected 0..{len(items) - 1} (one less than the {len(items)} "
                          "comparisons per rater: a repeat needs a comparison between it and its first showing)")
    rng = np.random.default_rng(seed)
    sides = np.empty((len(items), raters), dtype=bool)
    for k in range(len(items)):
        sides[k] = rng.permutation((np.arange(raters) + k) % 2 == 0)
    out = []
    for r in range(raters):
        order = [(items[k], bool(sides[k, r])) for k in rng.permutation(len(items))]
        # a repeat of the original at index k goes before original index `at` >= k + 2 (one item in between)
        inserts: dict[int, list[int]] = {}
        # (the last original cannot be repeated: nothing could come between)
        for k in sorted(rng.choice(len(order) - 1, size=repeats, replace=False)) if repeats else []:
            at = int(rng.integers(k + 2, len(order) + 1))
            inserts.setdefault(at, []).append(int(k))
        final: list[tuple[Item, bool, int | None]] = []
        first: dict[int, int] = {}
        for i in range(len(order) + 1):
            for k in inserts.get(i, []):
                final.append((order[k][0], not order[k][1], first[k]))
            if i < len(order):
                first[i] = len(final)
                final.append((order[i][0], order[i][1], None))
        out.append(final)
    return out


def transcode_webm(src: Path, dst: Path) -> None:
    """Re-encode a video to VP9 in WebM (yuv420p, near-lossless crf), which every current browser plays. Odd
    frame sizes are padded by one edge pixel (4:2:0 needs even sizes)."""
    frames, fps = read_video(src)
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    tmp = dst.with_suffix(".tmp.webm")
    try:
        encode_video(tmp, frames, max(1, round(fps or 8)), "webm", "libvpx-vp9", "yuv420p",
                     {"crf": "4", "b": "0", "deadline": "good", "cpu-used": "4"})
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first: what making it would create."""
    out = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        out.append(f)
    return out


@dataclass
class CreatedStudy:
    db: Path
    tokens: list[str]
    comparisons_per_rater: int
    prompts: int
    videos: int


def create_study(db_path: Path, videos_dir: Path, name: str, sets: list[SampleSet], raters: int, repeats: int = 0,
                 seed: int = 0, max_prompts: int = 0, provenance: dict[str, Any] | None = None,
                 transcode: bool = True) -> CreatedStudy:
    """Write a new study database: the models' sample folders, the videos used (re-encoded to WebM under
    `videos_dir` unless `transcode` is false, then the originals are served), one random token per rater
    (`secrets.token_urlsafe`) and every rater's assignments (`design`). Rater r sees sample index r mod (the
    number of sample indices both models have for that prompt), so several samples per prompt are all judged."""
    if len({s.model for s in sets}) != len(sets):
        raise ConfigError(f"the models of a study must differ, got {[s.model for s in sets]}")
    prompts = common_prompts(sets)
    if max_prompts:
        prompts = prompts[:max_prompts]
    plan = design(len(sets), prompts, raters, repeats, seed)
    maps = [s.by_prompt() for s in sets]
    db_path, videos_dir = Path(db_path), Path(videos_dir)
    # a study that fails half-way leaves nothing behind: its database, its WebM copies, the folders it made
    new_folders = sorted(set(missing_folders(db_path.parent) + missing_folders(videos_dir)),
                         key=lambda f: len(f.parts), reverse=True)
    written: list[Path] = []
    conn = create_db(db_path)  # refuses an existing study before anything is written
    try:
        conn.execute("BEGIN IMMEDIATE")
        meta = {"name": name, "created_utc": utc_now(), "seed": seed, "raters": raters, "repeats": repeats,
                "models": [s.model for s in sets], "prompts": prompts, "provenance": provenance or {},
                "media": WEBM if transcode else "original"}
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                         [(k, json.dumps(v, default=str)) for k, v in meta.items()])
        for i, s in enumerate(sets):
            conn.execute("INSERT INTO sources (id, model, folder, samples_json, checkpoint, provenance) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (i + 1, s.model, str(s.folder.resolve()),
                                                       str(s.index.resolve()), s.checkpoint,
                                                       json.dumps(s.provenance, default=str)))
        video_ids: dict[tuple[int, str, int], str] = {}

        def video(model: int, prompt: str, r: int) -> str:
            other = [m for m in range(len(sets)) if m != model]
            shared = sorted(set(maps[model][prompt]).intersection(*(maps[o][prompt] for o in other)))
            index = shared[r % len(shared)] if shared else sorted(maps[model][prompt])[r % len(maps[model][prompt])]
            key = (model, prompt, index)
            if key not in video_ids:
                rec = maps[model][prompt][index]
                vid = secrets.token_hex(16)
                src = (sets[model].folder / rec["path"]).resolve()
                if transcode:
                    dst = (videos_dir / f"{vid}.webm").resolve()
                    written.append(dst)
                    transcode_webm(src, dst)
                    file, media = dst, WEBM
                else:
                    file, media = src, "video/mp4"
                conn.execute("INSERT INTO videos (id, source_id, prompt_id, prompt, sample_index, original, file, "
                             "media_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (vid, model + 1, prompt, rec["prompt"], index, str(src), str(file), media))
                video_ids[key] = vid
            return video_ids[key]

        tokens = []
        for r, order in enumerate(plan):
            token = secrets.token_urlsafe(24)
            tokens.append(token)
            rater = conn.execute("INSERT INTO raters (token, label) VALUES (?, ?)",
                                 (token, f"rater {r + 1}")).lastrowid
            ids: list[int] = []
            for pos, (item, a_left, repeat_of) in enumerate(order):
                va, vb = video(item.model_a, item.prompt_id, r), video(item.model_b, item.prompt_id, r)
                left, right = (va, vb) if a_left else (vb, va)
                ids.append(conn.execute(
                    "INSERT INTO assignments (rater_id, position, prompt_id, left_video, right_video, repeat_of) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (rater, pos, item.prompt_id, left, right, None if repeat_of is None else ids[repeat_of])
                ).lastrowid)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        for f in (db_path, *(db_path.with_name(db_path.name + x) for x in ("-wal", "-shm", "-journal")), *written):
            f.unlink(missing_ok=True)
        for folder in new_folders:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    conn.close()
    return CreatedStudy(Path(db_path), tokens, len(plan[0]), len(prompts), len(video_ids))
