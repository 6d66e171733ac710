"""`pyramid-repro fid-points`: the FID-vs-compute points of one curriculum stage of one experiment (paper Sec. 5,
Fig. 5-6 analogue: FID convergence of the spatial pyramid vs full-sequence flow matching; docs/method.md §7).

The trainer only saves the EMA weights at the stage's FID-point steps (train/dit.py `FidSnapshots`:
<stage>/fid_snapshots/step_<global step>/). This job loads each snapshot, generates `train.fid_samples` first
frames (one latent frame) for the held-out captions `val_captions[i % len]` in batches of 32 with one generator
seeded `seed`, under one classifier-free guidance for every experiment (`train.fid_guidance`, so the pyramid and
the full-sequence baseline are generated alike), decodes them with the VAE and scores their probe features
against the real held-out frames with a bootstrap interval over the captions. Per point it writes
<stage>/fid_points/step_<global step>.npz (the features with the caption of each image: the unit shared by all
experiments, which use the same captions in the same order) and then the stage's fid.csv (FID_COLUMNS),
atomically, from those files. A rerun after a crash keeps the points whose npz matches the snapshot and settings.

Its command line (options, messages) is commands/fid_points.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pyramid_repro.config import Config, load_config
from pyramid_repro.device import autocast, config_device
from pyramid_repro.device import generator as device_generator
from pyramid_repro.eval.backends import fid_probe_features, frechet_interval, real_probe_stats
from pyramid_repro.generation.generate import generate_latents
from pyramid_repro.models import load_dit
from pyramid_repro.provenance import write_csv, write_npz
from pyramid_repro.releases import text_encoder_for, vae_for
from pyramid_repro.train.dit import (FID_COLUMNS, SNAPSHOT_INFO, CaptionBank, curriculum_stage, fid_point_steps,
                                     list_snapshots, snapshot_dir, stage_caption_bank, stage_captions, stage_steps,
                                     training_owner)
from pyramid_repro.vae.handle import decode_latents

FID_RESAMPLES = 200  # bootstrap resamples of a training FID point (its interval; eval/uncertainty.py)
FID_BATCH = 32  # first frames generated per batch
BACKEND = "fid-probe"


def fid_guidance(cfg: Config) -> float:
    """The classifier-free guidance of every experiment's FID points: `train.fid_guidance`, or when it is None the
    profile's `pyramid.sampler.guidance_first_frame` before experiment overrides (user overrides included)."""
    if cfg.train.fid_guidance is not None:
        return float(cfg.train.fid_guidance)
    base = load_config(cfg.profile, getattr(cfg, "_user_overrides", None))
    return float(base.pyramid.sampler.guidance_first_frame)


def fid_generation_config(cfg: Config) -> Config:
    """A copy of `cfg` whose sampler guidance scales (first frame and later frames) both equal fid_guidance(cfg):
    the one-frame generation takes the first-frame scale in the pyramid and the video scale in the full-sequence
    model (generation/generate.py), so both are set for the two arms to share one setting."""
    g = fid_guidance(cfg)
    out = copy.deepcopy(cfg)
    out.pyramid.sampler.guidance_first_frame = g
    out.pyramid.sampler.guidance_video = g
    return out


def fid_captions(val_captions: list[str], n: int) -> list[str]:
    """The caption of each of the `n` generated first frames: the held-out captions in order, repeated."""
    if not val_captions:
        raise ValueError("no captions to generate FID points from")
    return [val_captions[i % len(val_captions)] for i in range(n)]


@torch.no_grad()
def generate_first_frames(model: torch.nn.Module, cfg: Config, bank: CaptionBank, captions: list[str],
                          latent_size: tuple[int, int], seed: int, vae=None) -> torch.Tensor:
    """One generated first frame per caption, in batches of FID_BATCH with one generator seeded `seed` on the
    model's device, under `fid_generation_config(cfg)`: normalised latents (N, C, 1, h, w), or with `vae` the
    decoded frames (N, 3, 1, H, W) in about [-1, 1]."""
    gen_cfg = fid_generation_config(cfg)
    dev = next(model.parameters()).device
    g = device_generator(seed, dev)
    out = []
    for b in range(0, len(captions), FID_BATCH):
        text = bank.batch(captions[b: b + FID_BATCH])
        with autocast(dev, cfg.train.precision):
            lat = generate_latents(model, gen_cfg, text, bank.empty(), 1, tuple(latent_size), g)
        out.append(lat.float() if vae is None else decode_latents(vae, lat.float()))
    return torch.cat(out)


def point_key(snapshot: Path, cfg: Config) -> str:
    """What a FID point depends on besides the code: its snapshot's record, the generation settings and the probe
    (its probe.json): an npz with another key is recomputed."""
    parts = [(snapshot / SNAPSHOT_INFO).read_text(), json.dumps([cfg.train.fid_samples, fid_guidance(cfg), cfg.seed]),
             cfg.layout.probe_info().read_text() if cfg.layout.probe_info().is_file() else ""]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def points_dir(stage_dir: Path) -> Path:
    return stage_dir / "fid_points"


def point_file(stage_dir: Path, step: int) -> Path:
    """<stage>/fid_points/step_<global step>.npz."""
    return points_dir(stage_dir) / f"step_{step}.npz"


def _load_point(path: Path, key: str) -> dict | None:
    """The saved point at `path` when it was computed under `key`, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):  # a file a crash left unreadable
        return None


def score_point(cfg: Config, snapshot: Path, bank: CaptionBank, val_captions: list[str], vae, device) -> dict:
    """Generate and score one snapshot: its npz arrays (features float64 (n, D), units (n,) captions, fid, fid_lo,
    fid_hi, step, guidance, the snapshot's compute, key)."""
    info = json.loads((snapshot / SNAPSHOT_INFO).read_text())
    model = load_dit(snapshot, device, cfg.model.attention_kernel)
    caps = fid_captions(val_captions, cfg.train.fid_samples)
    frames = generate_first_frames(model, cfg, bank, caps, info["latent_size"], cfg.seed, vae)
    feats = fid_probe_features(frames, cfg)
    fid, (lo, hi) = frechet_interval(np.split(feats, len(caps)), caps, *real_probe_stats(cfg), FID_RESAMPLES,
                                     seed=cfg.seed)
    return {"features": feats.astype(np.float64), "units": np.array(caps, dtype=str), "fid": np.float64(fid),
            "fid_lo": np.float64(lo), "fid_hi": np.float64(hi), "step": np.int64(info["step"]),
            "guidance": np.float64(fid_guidance(cfg)), "samples_seen": np.int64(info["samples_seen"]),
            "tokens_seen": np.int64(info["tokens_seen"]), "flops": np.float64(info["flops"]),
            "device_hours": np.float64(info["device_hours"]), "stage": np.array(info["stage"]),
            "key": np.array(point_key(snapshot, cfg))}


def fid_row(point: dict, units_file: str) -> dict:
    """The fid.csv row (FID_COLUMNS) of a scored point."""
    return {"step": int(point["step"]), "samples_seen": int(point["samples_seen"]),
            "tokens_seen": int(point["tokens_seen"]), "flops": float(point["flops"]),
            "device_hours": float(point["device_hours"]), "fid": f"{float(point['fid']):.4f}",
            "fid_lo": f"{float(point['fid_lo']):.4f}", "fid_hi": f"{float(point['fid_hi']):.4f}",
            "backend": BACKEND, "stage": str(point["stage"]), "units_file": units_file}


def expected_steps(cfg: Config, experiment: str, stage_name: str) -> list[int]:
    """Global steps of the stage's FID points (fid_point_steps, after the earlier stages' steps)."""
    idx, st = curriculum_stage(cfg, stage_name)
    prev = sum(stage_steps(cfg, experiment, s) for s in cfg.train.curriculum[:idx])
    return [prev + s for s in fid_point_steps(stage_steps(cfg, experiment, st), cfg.train.fid_every, st.fid_points)]


def fid_points(cfg: Config, experiment: str, stage_name: str, out: Path | None = None) -> Path:
    """Score every FID snapshot of `experiment`'s run of `stage_name` (its owner's, train.share_image_stage);
    returns the stage's fid.csv (header only when train.fid_every is 0)."""
    _, st = curriculum_stage(cfg, stage_name)
    experiment, cfg = training_owner(cfg, experiment, st)
    stage_dir = out or cfg.layout.stage(experiment, stage_name)
    steps = expected_steps(cfg, experiment, stage_name)
    folder = stage_dir / "fid_snapshots"
    found = {int(p.name.split("_", 1)[1]): p for p in list_snapshots(folder)} if folder.is_dir() else {}
    missing = [s for s in steps if s not in found]
    if missing:
        where = folder if folder.is_dir() else f"{folder} (no such folder)"
        names = [snapshot_dir(folder, s).name for s in steps]
        raise FileNotFoundError(
            f"{where}: no FID snapshot for global step(s) {missing} (expected {names}); they are written by "
            f"`pyramid-repro train-dit --experiment {experiment} --stage {stage_name}` (train.fid_every > 0): "
            "train the stage first")
    rows = []
    if steps:
        dev = config_device(cfg)
        captions, val_captions = stage_captions(cfg, stage_name)
        bank = stage_caption_bank(cfg, stage_name, text_encoder_for(cfg, dev), dev, captions, val_captions)
        vae = None
        for step in tqdm(steps, desc=f"FID points {experiment}/{stage_name}"):
            path = point_file(stage_dir, step)
            point = _load_point(path, point_key(found[step], cfg))
            if point is None:
                vae = vae or vae_for(cfg, device=dev)
                point = score_point(cfg, found[step], bank, val_captions, vae, dev)
                write_npz(path, point)
            rows.append(fid_row(point, os.path.relpath(path, cfg.layout.experiment(experiment))))
    write_csv(stage_dir / "fid.csv", FID_COLUMNS, rows)
    return stage_dir / "fid.csv"
