"""The VAE handle (docs/method.md §4): a loaded VAE with its latent normalisation, and how to load one.

Normalisation as the official repo: z_norm = (z - shift) * scale, with separate statistics for the first latent
frame (an image; repo: shift 0.1490, scale 1/1.8415) and the later frames (video; repo: shift -0.2343, scale
1/3.0986). For the suite's own VAE they are computed from its training latents (`compute_normalization`, by
train-vae) and stored beside its weights; the authors' released VAE (vae/official.py) comes with the release's.

`load_vae(folder)` loads either kind as a `LoadedVAE`: train-vae's final/ folder or the release's
`causal_video_vae/` folder (`load_official_vae`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.vae.model import CausalVideoVAE
from pyramid_repro.vae.official import (
    build_official_vae,
    is_official_vae_folder,
    load_state_dict_strictly,
    read_release_state_dict,
)


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


# Latent normalisation of the release's pipeline (pyramid_dit/pyramid_dit_for_video_gen_pipeline.py: __init__,
# get_vae_latent, decode_latent): z_norm = (z - shift) * scale, frame 0 with image statistics that depend on the
# DiT the VAE was paired with, later frames with video statistics shared by both releases. This is the SD3 release's,
# the default of a release VAE folder loaded on its own; each release's is on its record (releases.py).
OFFICIAL_NORMALIZATION = Normalization(0.1490, 1 / 1.8415, -0.2343, 1 / 3.0986)
"""The SD3-based release (pipeline model_name `pyramid_mmdit`): image shift 0.1490, scale 1/1.8415; video shift
-0.2343, scale 1/3.0986."""


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
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents: the posterior mean (the suite's own use), or with a
        `generator` a draw from the posterior, mean + std * noise (the authors' image-to-video,
        `latent_dist.sample()`; the whole clip is encoded at once for our VAE, whose chunked path has no draw)."""
        if generator is None:
            return self.norm.normalize(self.model.encode(video, chunk_frames=self.chunk_frames))
        if isinstance(self.model, CausalVideoVAE):
            z = self.model.encode(video, sample=True, generator=generator)
        else:
            z = self.model.encode(video, chunk_frames=self.chunk_frames, sample=True, generator=generator)
        return self.norm.normalize(z)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self.norm.denormalize(latents), chunk_frames=self.chunk_frames).clamp(-1, 1)


def load_vae(folder: Path, chunk_frames: int = 0, device: torch.device | str = "cpu") -> LoadedVAE:
    """The VAE saved by train-vae (folder = results/<profile>/vae/final), in eval mode on `device`; or, when the
    folder is the authors' released `causal_video_vae/` (vae/official.py), that one, with the release's latent
    normalisation."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no trained VAE (config.json missing); run `pyramid-repro train-vae`")
    if is_official_vae_folder(folder):
        return load_official_vae(folder, chunk_frames, device)
    model = CausalVideoVAE.from_pretrained(folder).eval().to(device)
    return LoadedVAE(model, Normalization.load(folder / "normalization.json"), chunk_frames)


def load_official_vae(folder: str | Path, chunk_frames: int = 0, device: torch.device | str = "cpu",
                      norm: Normalization = OFFICIAL_NORMALIZATION, tile_sample_size: int = 0) -> LoadedVAE:
    """The release's `causal_video_vae/` folder (config.json + weights) as a LoadedVAE: loaded strictly, float32,
    eval mode, on `device`, with the SD3 release's latent normalisation unless `norm` says otherwise."""
    folder = Path(folder)
    model = build_official_vae(folder)
    load_state_dict_strictly(model, read_release_state_dict(folder), folder)
    model.tile_sample_size = tile_sample_size
    return LoadedVAE(model.eval().to(device), norm, chunk_frames)


def encode_video(vae: LoadedVAE, video: torch.Tensor) -> torch.Tensor:
    return vae.encode(video)


def decode_latents(vae: LoadedVAE, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, C, T, h, w) -> video (B, 3, 1 + (T-1)*T_c, H, W) in [-1, 1]."""
    return vae.decode(latents)
