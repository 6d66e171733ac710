"""Datasets over a manifest (synthetic world or real WebVid/OpenVid-style clips).

A manifest is a CSV/Parquet with columns path, caption, frames, fps, height, width, split, kind, factors. Real
clips are resampled to the target fps and frame count (by timestamps), resized on the shorter side and
centre-cropped. A missing, undecodable or too-short file raises :class:`BadVideoError` naming the file, or, with
``on_bad_video="skip"``, is dropped up front and counted (``ClipDataset.skipped``) — never a silent wrong sample.
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
    """A manifest row cannot give a valid sample; the message names the file and the problem."""


def read_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest {path}: file not found")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
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
    p = Path(row["path"])
    return p if p.is_absolute() else Path(row["root"]) / p


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
        if str(row.get("kind", "video")) == "image" or path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            pix = read_image(path)[None]
            if frames != 1:
                raise BadVideoError(f"{path}: an image cannot give {frames} frames")
        else:
            pix, src_fps = read_video(path)
            pix = pix[sample_indices(len(pix), src_fps or fps, frames, fps)]
    except (VideoReadError, BadVideoError) as e:
        msg = str(e)
        raise BadVideoError(msg if str(path) in msg else f"{path}: {msg}") from e
    video = torch.from_numpy(np.ascontiguousarray(pix)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    video = resize_center_crop(video, height, width)
    return video.permute(1, 0, 2, 3).contiguous()


def check_manifest(path: str | Path, on_bad_video: str = "error", frames: int | None = None,
                   fps: float | None = None) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Check every row decodes (and is long enough when frames/fps are given). Returns (good rows, bad rows)."""
    df = read_manifest(path)
    bad = []
    keep = []
    for i, row in df.iterrows():
        try:
            p = _resolve(row)
            if str(row.get("kind", "video")) == "image":
                read_image(p)
            else:
                pix, src_fps = read_video(p)
                if frames:
                    sample_indices(len(pix), src_fps or fps, frames, fps or src_fps)
            keep.append(i)
        except (VideoReadError, BadVideoError) as e:
            msg = str(e) if str(p) in str(e) else f"{p}: {e}"
            if on_bad_video == "error":
                raise BadVideoError(f"manifest {path}, row {i}: {msg}") from e
            e = msg
            bad.append({"row": str(i), "path": str(row["path"]), "error": e})
    if bad:
        log.warning("manifest %s: skipped %d bad row(s)", path, len(bad))
    return df.loc[keep].drop(columns=["root"]).reset_index(drop=True), bad


class ClipDataset(Dataset):
    """Clips (or images) of a manifest -> {"video": (3, T, H, W) in [-1, 1], "caption", "index", "factors"}."""

    def __init__(self, manifest: str | Path | pd.DataFrame, split: str | None, kind: str | None, height: int,
                 width: int, frames: int, fps: float, on_bad_video: str = "error"):
        if on_bad_video not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_video={on_bad_video!r}; expected 'error' or 'skip'")
        df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
        if split is not None:
            df = df[df["split"] == split]
        if kind is not None:
            df = df[df["kind"] == kind]
        self.rows = df.reset_index(drop=True)
        self.height, self.width, self.frames, self.fps = height, width, frames, fps
        self.on_bad_video = on_bad_video
        self.skipped: list[dict[str, str]] = []
        if on_bad_video == "skip":
            self._drop_bad()
        if len(self.rows) == 0:
            raise ConfigError(f"no rows for split={split!r} kind={kind!r} in the manifest")

    def _drop_bad(self) -> None:
        keep = []
        for i, row in self.rows.iterrows():
            try:
                load_clip(row, self.height, self.width, self.frames, self.fps)
                keep.append(i)
            except BadVideoError as e:
                self.skipped.append({"path": str(row["path"]), "error": str(e)})
        if self.skipped:
            log.warning("skipped %d bad video(s): %s", len(self.skipped), "; ".join(s["error"] for s in self.skipped[:5]))
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
            manifest = cfg.results_dir("data", "manifest.csv")
            if not manifest.is_file():
                raise ConfigError(f"{manifest}: not built yet; run `pyramid-repro make-dataset --profile {cfg.profile}`")
        n = frames if frames is not None else (1 if kind == "image" else cfg.data.frames)
        return cls(manifest, split, kind, height or cfg.data.height, width or cfg.data.width, n, cfg.data.fps,
                   cfg.data.on_bad_video)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows.iloc[index]
        video = load_clip(row, self.height, self.width, self.frames, self.fps)
        factors = json.loads(row["factors"]) if isinstance(row["factors"], str) and row["factors"] else {}
        return {"video": video, "caption": str(row["caption"]), "index": int(index), "factors": factors}
