"""The probe network (offline scoring, labelled "synthetic proxy" wherever its numbers appear).

A small CNN trained here on real frames of the synthetic world (train split) to read the known factors: which
shapes and which colours are present (multi-label), how many objects, which background. Its penultimate features
feed the `fid-probe` Fréchet distance and the subject-consistency proxy. `pyramid-repro train-probe` writes
results/<profile>/probe/{probe.safetensors, probe.json (held-out accuracies, provenance), real_stats.npz}.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pyramid_repro.config import Config
from pyramid_repro.data.datasets import ClipDataset
from pyramid_repro.data.synthetic import BACKGROUNDS, COLOURS, SHAPES
from pyramid_repro.device import config_device
from pyramid_repro.provenance import provenance, write_json

FEATURES = 64


def _vocab():
    return list(SHAPES), list(COLOURS), list(BACKGROUNDS)


class ProbeNet(nn.Module):
    def __init__(self, n_shapes: int = 4, n_colours: int = 6, n_backgrounds: int = 4, max_objects: int = 3):
        super().__init__()
        c = 32
        # two layers at full resolution: shape needs the detail of 5-8 pixel objects (one full-resolution layer, or
        # width 24, lost 15+ points of held-out shape accuracy on the tiny world)
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool2d(4), nn.Flatten(), nn.Linear(2 * c * 16, FEATURES), nn.ReLU())
        self.shapes = nn.Linear(FEATURES, n_shapes)
        self.colours = nn.Linear(FEATURES, n_colours)
        self.count = nn.Linear(FEATURES, max_objects)
        self.background = nn.Linear(FEATURES, n_backgrounds)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames in [-1, 1] -> (N, FEATURES)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {"shapes": self.shapes(f), "colours": self.colours(f), "count": self.count(f),
                "background": self.background(f), "features": f}


def frame_labels(factors: dict) -> dict[str, torch.Tensor]:
    shapes, colours, backgrounds = _vocab()
    s = torch.zeros(len(shapes))
    c = torch.zeros(len(colours))
    for o in factors["objects"]:
        s[shapes.index(o["shape"])] = 1
        c[colours.index(o["colour"])] = 1
    return {"shapes": s, "colours": c, "count": torch.tensor(len(factors["objects"]) - 1),
            "background": torch.tensor(backgrounds.index(factors["background"]))}


def _frames(cfg: Config, split: str, per_clip: int, rng: np.random.Generator):
    """Frames (N, 3, H, W) and their labels from clips (random frames) and images of a split."""
    xs, labels = [], []
    for kind in ("video", "image"):
        try:
            ds = ClipDataset.from_config(cfg, split, kind)
        except Exception:  # noqa: BLE001 - a split may have no images
            continue
        for i in range(len(ds)):
            it = ds[i]
            v = it["video"]
            ts = rng.choice(v.shape[1], size=min(per_clip, v.shape[1]), replace=False)
            for t in ts:
                xs.append(v[:, t])
                labels.append(frame_labels(it["factors"]))
    return torch.stack(xs), {k: torch.stack([lb[k] for lb in labels]) for k in labels[0]}


@torch.no_grad()
def probe_outputs(model: ProbeNet, frames: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
    """The probe's outputs (logits and features) for frames (N, 3, H, W) in [-1, 1], computed on the probe's device
    in chunks of `chunk` frames (a held-out set at the small profile is thousands of 128x128 frames); CPU tensors."""
    dev = next(model.parameters()).device
    parts = [model(frames[i: i + chunk].to(dev)) for i in range(0, len(frames), chunk)]
    return {k: torch.cat([p[k] for p in parts]).float().cpu() for k in parts[0]}


def accuracies(model: ProbeNet, x: torch.Tensor, y: dict) -> dict[str, float]:
    """Held-out accuracies. `shape`/`colour`: the most likely shape/colour on single-object frames (what the
    object_class and color dimensions read); `*_set`: exact match of the predicted set on every frame."""
    out = probe_outputs(model, x)
    single = y["count"] == 0
    return {
        "shape": float((out["shapes"][single].argmax(1) == y["shapes"][single].argmax(1)).float().mean()),
        "colour": float((out["colours"][single].argmax(1) == y["colours"][single].argmax(1)).float().mean()),
        "shape_set": float(((out["shapes"] > 0).float() == y["shapes"]).all(1).float().mean()),
        "colour_set": float(((out["colours"] > 0).float() == y["colours"]).all(1).float().mean()),
        "count": float((out["count"].argmax(1) == y["count"]).float().mean()),
        "background": float((out["background"].argmax(1) == y["background"]).float().mean()),
    }


def fit_probe(x: torch.Tensor, y: dict[str, torch.Tensor], steps: int, batch: int = 64,
              seed: int = 0, device: torch.device | str = "cpu") -> tuple[ProbeNet, float]:
    """Train a ProbeNet on `device` on frames `x` (N, 3, H, W) in [-1, 1] (kept where they are; each batch is moved)
    with `frame_labels` targets: multi-label BCE on the shapes and colours present, cross-entropy on object count
    and background; AdamW with a one-cycle schedule. Returns the model (eval mode) and the last batch loss."""
    if steps <= 0 or len(x) == 0:
        raise ValueError(f"fit_probe: steps={steps}, frames={len(x)}; both must be positive")
    torch.manual_seed(seed)
    model = ProbeNet().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)  # which frames and flips: host draws, the same on every device
    for _ in tqdm(range(steps), desc="train probe"):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb = x[idx].to(device)
        # left-right mirroring keeps every label (the shapes are mirror-symmetric, relations are not read here)
        flip = (torch.rand(batch, generator=g) < 0.5).to(device)
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        o = model(xb)
        yb = {k: v[idx].to(device) for k, v in y.items()}
        loss = (F.binary_cross_entropy_with_logits(o["shapes"], yb["shapes"])
                + F.binary_cross_entropy_with_logits(o["colours"], yb["colours"])
                + F.cross_entropy(o["count"], yb["count"]) + F.cross_entropy(o["background"], yb["background"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), float(loss.detach())


def train_probe(cfg: Config, out: Path | None = None, steps: int | None = None, batch: int = 64) -> dict:
    """`pyramid-repro train-probe`: fit the probe on real frames of the train split (clips and images), report its
    accuracy on every frame of the held-out test clips, save probe.safetensors, probe.json and the held-out
    real-frame feature statistics real_stats.npz (mean, covariance) used by fid-probe. Returns probe.json."""
    out = out or cfg.layout.probe()
    out.mkdir(parents=True, exist_ok=True)
    steps = steps or cfg.eval.probe_steps
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    # 8 random frames per training clip (more distinct positions of moving objects than 3); every frame of every
    # held-out clip, so the accuracy rests on ~1000 frames on the tiny profile instead of a few hundred
    x, y = _frames(cfg, "train", 8, rng)
    xv, yv = _frames(cfg, "test", cfg.data.frames, rng)
    t0 = time.perf_counter()
    model, loss = fit_probe(x, y, steps, batch, cfg.seed, config_device(cfg))
    train_seconds = time.perf_counter() - t0
    model.eval()
    acc = accuracies(model, xv, yv)
    from safetensors.torch import save_file

    save_file({k: v.cpu() for k, v in model.state_dict().items()}, str(out / "probe.safetensors"))
    # real-frame feature statistics of held-out frames, for the fid-probe backend and the FID curves
    feats = probe_outputs(model, xv)["features"].double().numpy()
    np.savez(out / "real_stats.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), n=len(feats))
    info = {"label": "probe network for offline synthetic-proxy metrics (not VBench, not Inception)",
            "heldout_accuracy": acc, "heldout_frames": len(xv), "train_frames": len(x), "steps": steps,
            "train_seconds": round(train_seconds, 1), "final_loss": loss,
            "provenance": provenance(cfg, backend="probe")}
    write_json(out / "probe.json", info)
    return info


def load_probe(cfg: Config, device: torch.device | str | None = None) -> ProbeNet:
    """The trained probe (results/<profile>/probe/probe.safetensors) in eval mode on `device` (default: the
    profile's compute.device)."""
    from safetensors.torch import load_file

    path = cfg.layout.probe_weights()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: probe not trained; run `pyramid-repro train-probe --profile {cfg.profile}`")
    m = ProbeNet()
    m.load_state_dict(load_file(str(path)))
    return m.eval().to(config_device(cfg) if device is None else device)
