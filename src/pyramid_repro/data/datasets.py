"""Datasets over a manifest (synthetic world or real WebVid/OpenVid-style clips).

A manifest is a CSV/Parquet with columns path, caption, frames, fps, height, width, split, kind, factors. Real
clips are resampled to the target fps and frame count (by timestamps), resized on the shorter side and
centre-cropped. A missing, undecodable or too-short file raises :class:`BadVideoError` naming the manifest, the row
(index, CSV line, `path` value), the problem and the fix, or, with ``on_bad_video="skip"``, is dropped up front and
counted (``ClipDataset.skipped``) — never a silent wrong sample. Skipping that leaves nothing to train on is an
error too. `pyramid-repro` prints a BadVideoError as one line on stderr and exits with status 2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.data.video_io import VideoReadError, read_image, read_video

log = logging.getLogger(__name__)
REQUIRED = ("path", "caption")


class BadVideoError(RuntimeError):
    """A manifest row cannot give a valid sample; the message names the file and the problem (one line)."""


FIX_ROW = "fix or remove the row, or set data.on_bad_video: skip to drop bad rows"
FIX_ALL = "fix the files or their paths (relative paths are read from the manifest's folder)"
# what went wrong, as counted in "skipped" summaries: (phrase in the message, short reason)
_REASONS = (("file not found", "file not found"), ("cannot decode", "cannot decode"), ("too short", "too short"),
            ("no video frames", "no video frames"), ("an image cannot give", "image, not a video"),
            ("empty path", "empty path"))


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _reason(msg: str) -> str:
    return next((short for phrase, short in _REASONS if phrase in msg), "other error")


def row_label(manifest: str | Path | None, index: int, path_value: object) -> str:
    """'manifest m.csv, row 3 (line 5), path 'a.mp4'': where a bad row is (line = CSV line, header on line 1)."""
    where = f"manifest {manifest}" if manifest is not None else "manifest"
    line = f" (line {index + 2})" if manifest is not None and Path(manifest).suffix != ".parquet" else ""
    return f"{where}, row {index}{line}, path {str(path_value)!r}"


def skipped_summary(manifest: str | Path | None, bad: list[dict[str, str]], total: int, what: str = "") -> str:
    """One line: how many rows were skipped of how many, and why (counted by reason), with the first one."""
    counts: dict[str, int] = {}
    for b in bad:
        counts[_reason(b["error"])] = counts.get(_reason(b["error"]), 0) + 1
    why = ", ".join(f"{n} {r}" for r, n in counts.items())
    first = bad[0]
    return (f"manifest {manifest if manifest is not None else '(in memory)'}: all {total} row(s){what} are bad and "
            f"were skipped (data.on_bad_video: skip): {why}; first: row {first['row']}, path {first['path']!r}: "
            f"{first['error']}; {FIX_ALL}")


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest {path}: file not found")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
    except (ValueError, OSError, ImportError) as e:  # parser/encoding errors, empty or unreadable file
        raise ConfigError(f"manifest {path}: cannot read it as {'Parquet' if path.suffix == '.parquet' else 'CSV'} "
                          f"({type(e).__name__}: {_one_line(e)})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"manifest {path}: missing column(s) {missing}; expected at least {list(REQUIRED)}")
    defaults = {"split": "train", "kind": "video", "factors": "", "fps": 0, "frames": 0, "height": 0, "width": 0}
    for col, val in defaults.items():
        if col not in df.columns:
            df[col] = val
    df["root"] = str(path.resolve().parent)
    return df


def _resolve(row: pd.Series) -> Path:
    value = row["path"]
    if not isinstance(value, str) or not value.strip():
        raise BadVideoError(f"empty path ({value!r})")
    p = Path(value)
    return p if p.is_absolute() or "root" not in row else Path(row["root"]) / p


def _is_image(row: pd.Series, path: Path) -> bool:
    return str(row.get("kind", "video")) == "image" or path.suffix.lower() in (".png", ".jpg", ".jpeg")


def sample_indices(n_src: int, src_fps: float, frames: int, fps: float) -> np.ndarray:
    """Frame indices that resample a clip of `n_src` frames at `src_fps` to `frames` frames at `fps`."""
    if src_fps <= 0 or fps <= 0:
        raise ValueError("fps must be positive")
    idx = np.floor(np.arange(frames) * src_fps / fps + 1e-6).astype(int)
    if idx[-1] >= n_src:
        raise BadVideoError(
            f"too short: {n_src} frames at {src_fps:g} fps, need {frames} frames at {fps:g} fps "
            f"({idx[-1] + 1} source frames)"
        )
    return idx


def resize_center_crop(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, 3, h, w) float -> (T, 3, height, width): resize so the frame covers the target, then centre crop."""
    _, _, h, w = video.shape
    if (h, w) == (height, width):
        return video
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    video = F.interpolate(video, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    return video[:, :, top : top + height, left : left + width]


def load_clip(row: pd.Series, height: int, width: int, frames: int, fps: float) -> torch.Tensor:
    """Decode one manifest row -> float32 (3, T, H, W) in [-1, 1]. Raises BadVideoError naming the file."""
    path = _resolve(row)
    try:
        if _is_image(row, path):
            pix = read_image(path)[None]
            if frames != 1:
                raise BadVideoError(f"{path}: an image cannot give {frames} frames")
        else:
            pix, src_fps = read_video(path)
            pix = pix[sample_indices(len(pix), src_fps or fps, frames, fps)]
    except (VideoReadError, BadVideoError) as e:
        msg = _one_line(e)
        raise BadVideoError(msg if str(path) in msg else f"{path}: {msg}") from e
    video = torch.from_numpy(np.ascontiguousarray(pix)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    video = resize_center_crop(video, height, width)
    return video.permute(1, 0, 2, 3).contiguous()


def check_manifest(path: str | Path, on_bad_video: str = "error", frames: int | None = None,
                   fps: float | None = None) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Check every row decodes (and is long enough when frames/fps are given). Returns (good rows, bad rows).

    on_bad_video="error": the first bad row raises BadVideoError (manifest, row, line, path, problem, fix).
    "skip": bad rows are returned as {"row", "path", "error", "reason"}; every row bad raises BadVideoError."""
    df = read_manifest(path)
    bad = []
    keep = []
    for i, row in df.iterrows():
        p = row["path"]
        try:
            p = _resolve(row)
            if _is_image(row, p):
                read_image(p)
            else:
                pix, src_fps = read_video(p)
                if frames and (src_fps or fps):
                    sample_indices(len(pix), src_fps or fps, frames, fps or src_fps)
            keep.append(i)
        except (VideoReadError, BadVideoError) as e:
            msg = _one_line(e)
            msg = msg if str(p) in msg else f"{p}: {msg}"
            if on_bad_video == "error":
                raise BadVideoError(f"{row_label(path, i, row['path'])}: {msg}; {FIX_ROW}") from e
            bad.append({"row": str(i), "path": str(row["path"]), "error": msg, "reason": _reason(msg)})
    if bad and not keep:
        raise BadVideoError(skipped_summary(path, bad, len(df)))
    if bad:
        log.debug("manifest %s: skipped %d bad row(s)", path, len(bad))
    return df.loc[keep].drop(columns=["root"]).reset_index(drop=True), bad


class ClipDataset(Dataset):
    """Clips (or images) of a manifest -> {"video": (3, T, H, W) in [-1, 1], "caption", "index", "factors"}."""

    def __init__(self, manifest: str | Path | pd.DataFrame, split: str | None, kind: str | None, height: int,
                 width: int, frames: int, fps: float, on_bad_video: str = "error"):
        if on_bad_video not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_video={on_bad_video!r}; expected 'error' or 'skip'")
        self.manifest = None if isinstance(manifest, pd.DataFrame) else Path(manifest)
        df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
        df = df.assign(_row=df.index)  # the manifest's row number, for error messages
        if split is not None:
            df = df[df["split"] == split]
        if kind is not None:
            df = df[df["kind"] == kind]
        self.rows = df.reset_index(drop=True)
        self.height, self.width, self.frames, self.fps = height, width, frames, fps
        self.on_bad_video = on_bad_video
        self.skipped: list[dict[str, str]] = []
        if on_bad_video == "skip" and len(self.rows):
            self._drop_bad(f" of split={split!r} kind={kind!r}")
        if len(self.rows) == 0:
            where = f"manifest {self.manifest}" if self.manifest is not None else "the manifest"
            raise ConfigError(f"no rows for split={split!r} kind={kind!r} in {where}")

    def _where(self, row: pd.Series) -> str:
        return row_label(self.manifest, row["_row"], row["path"])

    def _drop_bad(self, what: str) -> None:
        keep = []
        for i, row in self.rows.iterrows():
            try:
                load_clip(row, self.height, self.width, self.frames, self.fps)
                keep.append(i)
            except BadVideoError as e:
                msg = str(e)
                self.skipped.append({"row": str(row["_row"]), "path": str(row["path"]), "error": msg,
                                     "reason": _reason(msg)})
        if self.skipped and not keep:
            raise BadVideoError(skipped_summary(self.manifest, self.skipped, len(self.rows), what))
        if self.skipped:
            log.warning("skipped %d bad video(s): %s", len(self.skipped),
                        "; ".join(s["error"] for s in self.skipped[:5]))
        self.rows = self.rows.loc[keep].reset_index(drop=True)

    @classmethod
    def from_config(cls, cfg: Config, split: str | None, kind: str | None, height: int | None = None,
                    width: int | None = None, frames: int | None = None) -> "ClipDataset":
        """The dataset built for the profile (results/<profile>/data) or the user's real-data manifest."""
        if cfg.data.source == "manifest":
            if not cfg.data.manifest:
                raise ConfigError("data.source is 'manifest' but data.manifest is not set")
            manifest = Path(cfg.data.manifest)
        else:
            manifest = cfg.layout.manifest()
            if not manifest.is_file():
                raise ConfigError(f"{manifest}: not built yet; run "
                                  f"`pyramid-repro make-dataset --profile {cfg.profile}`")
        n = frames if frames is not None else (1 if kind == "image" else cfg.data.frames)
        return cls(manifest, split, kind, height or cfg.data.height, width or cfg.data.width, n, cfg.data.fps,
                   cfg.data.on_bad_video)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows.iloc[index]
        try:
            video = load_clip(row, self.height, self.width, self.frames, self.fps)
        except BadVideoError as e:
            raise BadVideoError(f"{self._where(row)}: {e}; {FIX_ROW}") from e
        factors = json.loads(row["factors"]) if isinstance(row["factors"], str) and row["factors"] else {}
        return {"video": video, "caption": str(row["caption"]), "index": int(index), "factors": factors}
