"""`pyramid-repro make-dataset`: render the synthetic world to disk, or check a real-data manifest.

Output folder (default results/<profile>/data): videos/*.mp4 (lossless), images/*.png, manifest.csv with columns
MANIFEST_COLUMNS, dataset.json with provenance. The same seed gives byte-identical files.

Its command line (options, messages) is commands/make_dataset.py.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.data.datasets import BadVideoError, check_manifest, read_manifest, row_label, skipped_summary
from pyramid_repro.data.synthetic import caption, render_clip, sample_factors
from pyramid_repro.data.video_io import write_video

MANIFEST_COLUMNS = ["path", "caption", "frames", "fps", "height", "width", "split", "kind", "factors"]
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "image": 3}


def _item(args: tuple) -> dict:
    """Render and write one clip/image; seeded by (seed, split, index) so workers are order-independent."""
    out, seed, split, index, h, w, frames, fps, syn = args
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    still = split == "image"
    f = sample_factors(rng, syn["max_objects"], syn["static_fraction"], syn["camera_pan_prob"],
                       syn["texture_prob"], frames=frames, still=still)
    if still:
        from PIL import Image

        rel = f"images/{index:06d}.png"
        pix = render_clip(f, h, w, 1)[0]
        (Path(out) / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pix).save(Path(out) / rel, optimize=False)
        n, kind, split_name = 1, "image", "train"
    else:
        rel = f"videos/{split}_{index:06d}.mp4"
        write_video(Path(out) / rel, render_clip(f, h, w, frames), fps)
        n, kind, split_name = frames, "video", split
    return {"path": rel, "caption": caption(f), "frames": n, "fps": fps, "height": h, "width": w,
            "split": split_name, "kind": kind, "factors": json.dumps(f.to_dict(), sort_keys=True)}


def build_synthetic(cfg: Config, out: Path, workers: int | None = None) -> pd.DataFrame:
    d, syn = cfg.data, cfg.data.synthetic
    jobs = []
    for split, count in (("train", syn.n_train), ("val", syn.n_val), ("test", syn.n_test), ("image", syn.n_images)):
        jobs += [(str(out), cfg.seed, split, i, d.height, d.width, d.frames, d.fps, vars(syn)) for i in range(count)]
    workers = workers or min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        rows = list(tqdm(pool.map(_item, jobs, chunksize=32), total=len(jobs), desc="synthetic world", unit="item"))
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def check_real_manifest(cfg: Config, max_listed: int = 20) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """make-dataset on a real-data manifest: every row must decode and be long enough for the longest clip the
    profile reads (data.frames, vae.train_frames, the video stages of train.curriculum) at data.fps.

    A bad row raises BadVideoError (on_bad_video=error; `pyramid-repro` prints it as one line, exit status 2); with
    on_bad_video=skip the bad rows are listed on stderr and returned, and skipping that leaves no usable row at all,
    or none of a split the profile reads (train/val/test videos, train images when a stage trains on images), raises
    BadVideoError naming the manifest, how many rows were skipped and why."""
    d = cfg.data
    if not d.manifest:
        raise ConfigError("data.source is 'manifest' but data.manifest is not set")
    frames = max([d.frames, cfg.vae.train_frames or 0] + [s.frames for s in cfg.train.curriculum if s.kind == "video"])
    df, bad = check_manifest(d.manifest, on_bad_video=d.on_bad_video, frames=frames, fps=d.fps)
    if not bad:
        return df, bad
    for b in bad[:max_listed]:
        print(f"make-dataset: skipped {row_label(d.manifest, int(b['row']), b['path'])}: {b['error']}", file=sys.stderr)
    if len(bad) > max_listed:
        print(f"make-dataset: ... and {len(bad) - max_listed} more bad row(s) (all listed in dataset.json)",
              file=sys.stderr)
    # a split the profile reads that had rows and lost them all to skipping
    full = read_manifest(d.manifest)
    needed = [("train", "video"), ("val", "video"), ("test", "video")]
    if any(s.kind == "image" for s in cfg.train.curriculum):
        needed.append(("train", "image"))
    bad_rows = {int(b["row"]) for b in bad}
    for split, kind in needed:
        rows = full.index[(full["split"] == split) & (full["kind"] == kind)]
        if len(rows) and all(int(r) in bad_rows for r in rows):
            lost = [b for b in bad if int(b["row"]) in set(rows)]
            raise BadVideoError(skipped_summary(d.manifest, lost, len(rows), f" of split={split!r} kind={kind!r}"))
    return df, bad
