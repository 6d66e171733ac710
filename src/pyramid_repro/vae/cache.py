"""The latent cache (docs/method.md §4): DiT training reads only this cache, latents normalised by the VAE
handle's statistics (vae/handle.py).

`pyramid-repro encode-latents` encodes the dataset once per curriculum stage at that stage's resolution and frame
count into sharded safetensors under results/<profile>/latents/<stage>/ with an index.json (caption, split,
factors, shard, row per item).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm import tqdm

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.data.datasets import ClipDataset
from pyramid_repro.provenance import provenance, write_json
from pyramid_repro.vae.handle import LoadedVAE

SHARD_SIZE = 1024


def encode_stage(cfg: Config, vae: LoadedVAE, stage, out: Path, batch: int = 32) -> Path:
    """Encode every split of a curriculum stage at its resolution/frame count; returns its index.json."""
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
