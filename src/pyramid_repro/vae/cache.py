"""Latent normalisation and the latent cache (docs/method.md §4): DiT training reads only this cache.

Normalisation as the official repo: z_norm = (z - shift) * scale, with separate statistics for the first latent
frame (an image; repo: shift 0.1490, scale 1/1.8415) and the later frames (video; repo: shift -0.2343, scale
1/3.0986), computed here from training latents of our own VAE and stored beside its weights.

`pyramid-repro encode-latents` encodes the dataset once per curriculum stage at that stage's resolution and frame
count into sharded safetensors under results/<profile>/latents/<stage>/ with an index.json (caption, split,
factors, shard, row per item).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm import tqdm

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.provenance import provenance, write_json

SHARD_SIZE = 1024


@dataclass(frozen=True)
class Normalization:
    image_shift: float
    image_scale: float
    video_shift: float
    video_scale: float

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def load(path: Path) -> "Normalization":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: VAE normalisation statistics not found; run `pyramid-repro train-vae`")
        d = json.loads(path.read_text())
        try:
            return Normalization(*(float(d[k]) for k in ("image_shift", "image_scale", "video_shift", "video_scale")))
        except KeyError as e:
            raise ConfigError(f"{path}: missing field {e}; expected image_shift, image_scale, video_shift, "
                              "video_scale") from None

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) raw latents -> normalised (frame 0 with image stats, later frames with video stats)."""
        return torch.cat([(z[:, :, :1] - self.image_shift) * self.image_scale,
                          (z[:, :, 1:] - self.video_shift) * self.video_scale], dim=2)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z[:, :, :1] / self.image_scale + self.image_shift,
                          z[:, :, 1:] / self.video_scale + self.video_shift], dim=2)


@torch.no_grad()
def compute_normalization(vae, bank, cfg: Config, n: int = 256) -> Normalization:
    """Mean/std of the posterior means of up to `n` training clips, separately for frame 0 and later frames."""
    vae.eval()
    dev = next(vae.parameters()).device
    rows = torch.arange(min(n, len(bank)))
    firsts, laters = [], []
    for b in range(0, len(rows), 16):
        z = vae.encode(bank.batch(rows[b: b + 16]).to(dev)).float().cpu()
        firsts.append(z[:, :, :1].flatten())
        laters.append(z[:, :, 1:].flatten())
    f, later = torch.cat(firsts), torch.cat(laters)
    if later.numel() == 0:
        later = f
    return Normalization(float(f.mean()), float(1.0 / f.std()), float(later.mean()), float(1.0 / later.std()))


class LoadedVAE:
    """A trained VAE with its normalisation statistics. encode/decode take and return tensors on the VAE's device."""

    def __init__(self, model, norm: Normalization, chunk_frames: int = 0):
        self.model, self.norm, self.chunk_frames = model, norm, chunk_frames

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents."""
        return self.norm.normalize(self.model.encode(video, chunk_frames=self.chunk_frames))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self.norm.denormalize(latents), chunk_frames=self.chunk_frames).clamp(-1, 1)


def load_vae(folder: Path, chunk_frames: int = 0, device: torch.device | str = "cpu") -> LoadedVAE:
    """The VAE saved by train-vae (folder = results/<profile>/vae/final), in eval mode on `device`; or, when the
    folder is the authors' released `causal_video_vae/` (vae/official.py), that one, with the release's latent
    normalisation."""
    from pyramid_repro.vae.model import CausalVideoVAE
    from pyramid_repro.vae.official import is_official_vae_folder, load_official_vae

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no trained VAE (config.json missing); run `pyramid-repro train-vae`")
    if is_official_vae_folder(folder):
        return load_official_vae(folder, chunk_frames, device)
    model = CausalVideoVAE.from_pretrained(folder).eval().to(device)
    return LoadedVAE(model, Normalization.load(folder / "normalization.json"), chunk_frames)


def encode_video(vae: LoadedVAE, video: torch.Tensor) -> torch.Tensor:
    return vae.encode(video)


def decode_latents(vae: LoadedVAE, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, C, T, h, w) -> video (B, 3, 1 + (T-1)*T_c, H, W) in [-1, 1]."""
    return vae.decode(latents)


def encode_stage(cfg: Config, vae: LoadedVAE, stage, out: Path, batch: int = 32) -> Path:
    """Encode every split of a curriculum stage at its resolution/frame count; returns its index.json."""
    from pyramid_repro.data.datasets import ClipDataset

    out.mkdir(parents=True, exist_ok=True)
    splits = ["train"] if stage.kind == "image" else ["train", "val", "test"]
    items, shard, shard_id = [], [], 0

    def flush():
        nonlocal shard, shard_id
        if shard:
            save_file({"latents": torch.cat(shard).contiguous()}, str(out / f"shard_{shard_id:05d}.safetensors"))
            shard, shard_id = [], shard_id + 1

    shape = None
    for split in splits:
        try:
            ds = ClipDataset.from_config(cfg, split, stage.kind, stage.height, stage.width, stage.frames)
        except ConfigError:
            if split == "train":
                raise
            continue
        for b in tqdm(range(0, len(ds), batch), desc=f"encode {stage.name}/{split}"):
            its = [ds[i] for i in range(b, min(b + batch, len(ds)))]
            z = vae.encode(torch.stack([it["video"] for it in its]).to(vae.device)).cpu()
            shape = list(z.shape[1:])
            for j, it in enumerate(its):
                if sum(s.shape[0] for s in shard) >= SHARD_SIZE:
                    flush()
                row = sum(s.shape[0] for s in shard)
                shard.append(z[j: j + 1])
                items.append({"caption": it["caption"], "split": split, "factors": it["factors"],
                              "shard": shard_id, "row": row})
    flush()
    index = out / "index.json"
    write_json(index, {"stage": stage.name, "kind": stage.kind, "height": stage.height, "width": stage.width,
                       "frames": stage.frames, "latent_shape": shape, "items": items,
                       "provenance": provenance(cfg)})
    return index


class LatentDataset(Dataset):
    """Normalised latents of one stage and split: {"latent": (C, T, h, w), "caption", "factors", "index"}."""

    def __init__(self, cache_dir: Path, stage_name: str, split: str = "train"):
        folder = Path(cache_dir) / stage_name
        index = folder / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{index}: latent cache of stage {stage_name!r} not built; run "
                                    "`pyramid-repro encode-latents`")
        meta = json.loads(index.read_text())
        self.items = [it for it in meta["items"] if it["split"] == split]
        if not self.items:
            raise FileNotFoundError(f"{index}: no items of split {split!r}")
        self.meta = meta
        self.shards = {s: load_file(str(folder / f"shard_{s:05d}.safetensors"))["latents"]
                       for s in sorted({it["shard"] for it in self.items})}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        return {"latent": self.shards[it["shard"]][it["row"]], "caption": it["caption"], "factors": it["factors"],
                "index": i}

    def all_latents(self) -> torch.Tensor:
        return torch.stack([self.shards[it["shard"]][it["row"]] for it in self.items])
