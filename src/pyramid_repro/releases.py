"""The authors' releases, one record each (docs/release.md): everything the suite needs to know about a released
Pyramid Flow folder, read by every command that samples, scores, fine-tunes or exports one.

A release folder (the authors' layout; a folder may be missing when it is not needed):

    <root>/diffusion_transformer_384p/   config.json + *.safetensors    (5 s at 640x384)
    <root>/diffusion_transformer_768p/   config.json + *.safetensors    (up to 10 s at 1280x768)
    <root>/causal_video_vae/             the authors' causal VAE (vae/official.py)
    <root>/text_encoder*/ tokenizer*/    the release's text encoders (which ones: the record's `text_folders`)

A `ReleaseKind` holds what differs between releases: how to recognise one (its transformer config.json), the
model class and the converters between the release's weight names and the class's (both ways), the text encoder,
the latent normalisation of its VAE, the resolutions it ships, and the latent geometry training sees (16
channels, 8x8x8 VAE, patch 2, 24 fps). `RELEASES` lists them; a new release is its model file plus one record
here. `find_release(folder)` gives the `Release` (root + kind) of a folder.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.models.base import DiTModel
from pyramid_repro.models.miniflux import MiniFluxDiT, is_miniflux_config, load_miniflux_layout
from pyramid_repro.models.official import OfficialPyramidDiT, load_sd3_layout
from pyramid_repro.models.text import (
    MINIFLUX_FOLDERS,
    RELEASE_FOLDERS,
    ClipLT5Encoder,
    ClipT5Encoder,
    build_text_encoder,
)
from pyramid_repro.release_specs import VAE_FOLDER
from pyramid_repro.vae.handle import (
    OFFICIAL_FLUX_NORMALIZATION,
    OFFICIAL_NORMALIZATION,
    LoadedVAE,
    Normalization,
    load_official_vae,
    load_vae,
)

FPS = 24
DEFAULT_LATENT_FRAMES = 16  # 5 s at 24 fps: 1 + 15 * 8 = 121 frames


@dataclass(frozen=True)
class Resolution:
    """One released transformer: its folder, pixel size and longest video in latent frames."""

    name: str
    folder: str
    width: int
    height: int
    max_latent_frames: int


# both releases ship the same two video transformers (miniFLUX's 1024p image model is not supported)
VIDEO_RESOLUTIONS = {
    "384p": Resolution("384p", "diffusion_transformer_384p", 640, 384, 16),
    "768p": Resolution("768p", "diffusion_transformer_768p", 1280, 768, 31),
}


@dataclass(frozen=True)
class ReleaseKind:
    """What one release is (module docstring). `name` names it in folders, tables and config values."""

    name: str
    label: str  # for tables: "SD3 release", "miniFLUX release"
    pipeline_model_name: str  # the authors' PyramidDiTForVideoGeneration(model_name=...)
    model_class: type[DiTModel]
    is_config: Callable[[dict], bool]  # does a transformer config.json belong to this release
    load_transformer: Callable[[str | Path], DiTModel]  # strict: release layout -> the suite's class
    text_encoder: type  # a class with from_release(root, max_tokens, dtype)
    text_folders: tuple[str, ...]
    normalization: Normalization
    resolutions: dict[str, Resolution] = field(default_factory=lambda: dict(VIDEO_RESOLUTIONS))
    fps: int = FPS
    # the latent geometry every transformer of the release was trained on (what fine-tuning must feed it)
    latent_channels: int = 16
    spatial_compression: int = 8
    temporal_compression: int = 8
    patch_size: int = 2

    @property
    def folder_prefix(self) -> str:
        """How sample folders of this release are named: release-<prefix><resolution>."""
        return "" if self.name == "sd3" else f"{self.name}-"

    def load_text_encoder(self, root: str | Path, max_tokens: int = 128, dtype: torch.dtype = torch.float32):
        """The release's text encoders from its folder (local files only)."""
        return self.text_encoder.from_release(root, max_tokens, dtype=dtype)

    def load_vae(self, root: str | Path, chunk_frames: int = 0, device: torch.device | str = "cpu",
                 tile_sample_size: int = 0) -> LoadedVAE:
        """The release's causal VAE (causal_video_vae/) with this release's latent normalisation."""
        return load_official_vae(Path(root) / VAE_FOLDER, chunk_frames, device, norm=self.normalization,
                                 tile_sample_size=tile_sample_size)


SD3 = ReleaseKind(
    name="sd3", label="SD3 release", pipeline_model_name="pyramid_mmdit", model_class=OfficialPyramidDiT,
    is_config=lambda c: bool(c) and not is_miniflux_config(c), load_transformer=load_sd3_layout,
    text_encoder=ClipT5Encoder, text_folders=tuple(RELEASE_FOLDERS), normalization=OFFICIAL_NORMALIZATION)
MINIFLUX = ReleaseKind(
    name="miniflux", label="miniFLUX release", pipeline_model_name="pyramid_flux", model_class=MiniFluxDiT,
    is_config=is_miniflux_config, load_transformer=load_miniflux_layout, text_encoder=ClipLT5Encoder,
    text_folders=tuple(MINIFLUX_FOLDERS), normalization=OFFICIAL_FLUX_NORMALIZATION)
# detection tries them in this order: the more specific test first
RELEASES: dict[str, ReleaseKind] = {k.name: k for k in (MINIFLUX, SD3)}


def all_resolutions() -> dict[str, Resolution]:
    """Every resolution some release ships (for command-line choices)."""
    out: dict[str, Resolution] = {}
    for kind in RELEASES.values():
        out.update(kind.resolutions)
    return out


@dataclass(frozen=True)
class Release:
    """A release folder on disk: its root and which release it is."""

    root: Path
    kind: ReleaseKind

    def transformer(self, resolution: str) -> Path:
        if resolution not in self.kind.resolutions:
            raise ConfigError(f"--resolution {resolution!r}: the {self.kind.label} has "
                              f"{', '.join(self.kind.resolutions)}")
        folder = self.root / self.kind.resolutions[resolution].folder
        if not (folder / "config.json").is_file():
            have = self.resolutions()
            raise ConfigError(f"{folder}: no transformer here (config.json missing); this release folder has "
                              f"{', '.join(have) or 'no transformer'}; pass --resolution "
                              f"{' or '.join(have) or '/'.join(self.kind.resolutions)}")
        return folder

    @property
    def vae(self) -> Path:
        return self.root / VAE_FOLDER

    @property
    def model(self) -> str:
        """The release's name (`ReleaseKind.name`: 'sd3' or 'miniflux')."""
        return self.kind.name

    def resolutions(self) -> list[str]:
        return [r for r, res in self.kind.resolutions.items() if (self.root / res.folder / "config.json").is_file()]

    def check(self, resolution: str) -> None:
        """Every folder sampling or training at `resolution` needs, or a ConfigError naming each missing one."""
        self.transformer(resolution)
        missing = [n for n in (VAE_FOLDER, *self.kind.text_folders) if not (self.root / n).is_dir()]
        if missing:
            raise ConfigError(f"{self.root}: {self.kind.name} release folder incomplete, missing "
                              f"{', '.join(missing)}/ (expected the authors' layout: "
                              f"{'|'.join(self.kind.resolutions)} transformer folders, {VAE_FOLDER}/, "
                              f"{'/, '.join(self.kind.text_folders)}/; see docs/release.md)")

    def load_transformer(self, resolution: str) -> DiTModel:
        """The release's transformer at `resolution` in the suite's class (float32, eval mode, CPU)."""
        return self.kind.load_transformer(self.transformer(resolution))


def detect_kind(root: Path) -> ReleaseKind:
    """Which release a folder holds: from a transformer's config.json (the first record whose `is_config`
    accepts it); without a readable one, from the text folders (the record whose text folders match what is
    there best)."""
    for res in all_resolutions().values():
        try:
            config = json.loads((root / res.folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        for kind in RELEASES.values():
            if kind.is_config(config):
                return kind
    names = {f for k in RELEASES.values() for f in k.text_folders}
    there = {f for f in names if (root / f).is_dir()}

    def fit(k: ReleaseKind) -> tuple[int, int]:  # (own folders there - others' folders there, - own missing)
        own = set(k.text_folders)
        return len(own & there) - len(there - own), -len(own - there)

    return max(RELEASES.values(), key=fit)


def find_release(folder: str | Path) -> Release | None:
    """The release whose root is `folder`, or whose transformer folder `folder` is; None for anything else (e.g.
    a checkpoint this suite wrote)."""
    folder = Path(folder)
    for root in (folder, folder.parent):
        if (root / VAE_FOLDER).is_dir() and any((root / r.folder).is_dir() for r in all_resolutions().values()):
            return Release(root, detect_kind(root))
    return None


def open_release(folder: str | Path, what: str = "release") -> Release:
    """`find_release`, or a ConfigError naming the folder and what a release folder holds."""
    rel = find_release(folder)
    if rel is None:
        raise ConfigError(f"{what}={str(folder)!r}: not a Pyramid Flow release folder (expected {VAE_FOLDER}/ beside "
                          f"{' or '.join(r.folder + '/' for r in all_resolutions().values())})")
    return rel


# --------------------------------------------------------------------------------------------------------------
# A config that fine-tunes a release (`release: <folder>`): what every job reads through these, so that no job
# asks the config which models to load
# --------------------------------------------------------------------------------------------------------------


def config_release(cfg: Config) -> Release | None:
    """The release the config fine-tunes (`release`), checked at `release_resolution`; None without one."""
    if not cfg.release:
        return None
    rel = open_release(cfg.release, "release")
    if cfg.release_resolution not in rel.kind.resolutions:
        raise ConfigError(f"release_resolution={cfg.release_resolution!r}: the {rel.kind.label} has "
                          f"{', '.join(rel.kind.resolutions)}")
    rel.check(cfg.release_resolution)
    return rel


def apply_release(cfg: Config) -> Config:
    """`cfg` with the latent geometry of the release it fine-tunes (latent channels, VAE compression, patch size:
    what the release's transformer was trained on); unchanged without `release`. Every command's config goes
    through it (cliutil.config_from_args, workflow.Plan)."""
    rel = config_release(cfg)
    if rel is None:
        return cfg
    k = rel.kind
    c = copy.deepcopy(cfg)
    c.vae.latent_channels, c.vae.spatial_compression = k.latent_channels, k.spatial_compression
    c.vae.temporal_compression, c.model.patch_size = k.temporal_compression, k.patch_size
    return c


def text_encoder_for(cfg: Config, device: torch.device | str = "cpu"):
    """The text encoder a config's jobs use: the release's (fine-tuning) or the profile's (text_encoder.kind)."""
    rel = config_release(cfg)
    if rel is None:
        return build_text_encoder(cfg, device)
    return rel.kind.load_text_encoder(rel.root, cfg.text_encoder.max_tokens).to(device)


def vae_for(cfg: Config, chunk_frames: int = 0, device: torch.device | str = "cpu") -> LoadedVAE:
    """The VAE a config's jobs encode and decode with: the release's causal VAE with its normalisation
    (fine-tuning) or the one train-vae wrote (results/<profile>/vae/final)."""
    rel = config_release(cfg)
    if rel is None:
        return load_vae(cfg.layout.vae_final(), chunk_frames, device)
    return rel.kind.load_vae(rel.root, chunk_frames, device)
