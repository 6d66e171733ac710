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
here (and its class's line in models/registry.py `DIT_CLASSES`). `find_release(folder)` gives the `Release` (root
+ kind) of a folder; `export_release` writes a model of a release's class back in that release's layout
(`pyramid-repro export`).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from pyramid_repro.config import Config, ConfigError, check_consistency, deep_merge
from pyramid_repro.models.base import DiTModel
from pyramid_repro.models.miniflux import (
    MiniFluxDiT,
    is_miniflux_config,
    load_miniflux_layout,
    miniflux_config_from_suite,
    miniflux_kwargs,
    release_to_suite,
    suite_to_release,
)
from pyramid_repro.models.official import (
    OfficialPyramidDiT,
    load_sd3_layout,
    sd3_config_from_suite,
    sd3_to_suite,
    suite_kwargs_from_sd3,
    suite_to_sd3,
)
from pyramid_repro.models.text import (
    MINIFLUX_FOLDERS,
    RELEASE_FOLDERS,
    ClipLT5Encoder,
    ClipT5Encoder,
    build_text_encoder,
)
from pyramid_repro.provenance import atomic_write_bytes, git_commit, utc_now, write_json
from pyramid_repro.release_specs import VAE_FOLDER
from pyramid_repro.vae.handle import (
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
    label: str  # for messages: "SD3 release", "miniFLUX release"
    table_name: str  # in table rows and progress: "Pyramid Flow <table_name> <resolution> (...)"
    folder_prefix: str  # sample folders of the release are named release-<folder_prefix><resolution>
    pipeline_model_name: str  # the authors' PyramidDiTForVideoGeneration(model_name=...)
    model_class: type[DiTModel]
    is_config: Callable[[dict], bool]  # does a transformer config.json belong to this release
    load_transformer: Callable[[str | Path], DiTModel]  # strict: release layout -> the suite's class
    # the converters both ways (strict: every tensor placed once, KeyError naming one that is not):
    # release config.json -> the class's arguments, and back (with the release's other keys)
    kwargs_from_config: Callable[[dict], dict]
    config_from_kwargs: Callable[[dict], dict]
    # (state dict, release config.json) -> the class's state dict; (state dict, class arguments) -> the release's
    state_from_release: Callable[[dict, dict], dict]
    state_to_release: Callable[[dict, dict], dict]
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

    def model_kwargs(self, config: dict) -> dict:
        """The model class's constructor arguments from a suite checkpoint's config.json (its defaults where a
        key is absent)."""
        params = list(inspect.signature(self.model_class.__init__).parameters.values())[1:]
        return {p.name: config.get(p.name, p.default) for p in params}

    def to_release(self, state: dict[str, torch.Tensor], config: dict, base: dict | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict]:
        """(state dict, transformer config.json) in the release's layout from the suite class's state dict and
        config.json, dtypes kept. `base`: the release's own transformer config.json, kept as it is (with its keys
        the suite does not read) once its architecture is checked to be the model's; without it the config.json
        is written from the model's arguments. KeyError naming a weight that is missing or has no place in the
        release, ValueError naming a weight of the wrong shape or an architecture key that disagrees."""
        kwargs = self.model_kwargs(config)
        release_config = self.config_from_kwargs(kwargs)
        if base is not None:
            want = self.model_kwargs(self.kwargs_from_config(base))
            plain = lambda d: json.loads(json.dumps(d))  # noqa: E731 (tuples and lists compare alike)
            diff = [f"{k} {kwargs[k]!r} (release: {want[k]!r})" for k in kwargs if plain(kwargs[k]) != plain(want[k])]
            if diff:
                raise ValueError(f"the model's architecture is not its release's transformer config.json: "
                                 f"{', '.join(diff)}")
            release_config = dict(base)
        with torch.device("meta"):  # shapes only
            shapes = {k: tuple(v.shape) for k, v in self.model_class(**kwargs).state_dict().items()}
        for k, v in state.items():
            if k not in shapes:
                raise KeyError(f"{k!r}: no such weight in {self.model_class.__name__} of this config, so no place "
                               f"in the {self.label}'s layout")
            if tuple(v.shape) != shapes[k]:
                raise ValueError(f"{k!r}: shape {tuple(v.shape)} where {self.model_class.__name__} of this config "
                                 f"has {shapes[k]}")
        missing = sorted(set(shapes) - set(state))
        if missing:
            raise KeyError(f"the state dict lacks {self.model_class.__name__}'s weights {missing[:8]}")
        return self.state_to_release(state, kwargs), release_config

    def load_text_encoder(self, root: str | Path, max_tokens: int = 128, dtype: torch.dtype = torch.float32):
        """The release's text encoders from its folder (local files only)."""
        return self.text_encoder.from_release(root, max_tokens, dtype=dtype)

    def load_vae(self, root: str | Path, chunk_frames: int = 0, device: torch.device | str = "cpu",
                 tile_sample_size: int = 0) -> LoadedVAE:
        """The release's causal VAE (causal_video_vae/) with this release's latent normalisation."""
        return load_official_vae(Path(root) / VAE_FOLDER, chunk_frames, device, norm=self.normalization,
                                 tile_sample_size=tile_sample_size)


# the SD3 release's sample folders and table rows keep the names they had before a second release was supported
SD3 = ReleaseKind(
    name="sd3", label="SD3 release", table_name="release", folder_prefix="", pipeline_model_name="pyramid_mmdit",
    model_class=OfficialPyramidDiT,
    is_config=lambda c: bool(c) and not is_miniflux_config(c), load_transformer=load_sd3_layout,
    kwargs_from_config=suite_kwargs_from_sd3, config_from_kwargs=sd3_config_from_suite,
    state_from_release=lambda s, c: sd3_to_suite(s, c["patch_size"], c["in_channels"]),
    state_to_release=lambda s, kw: suite_to_sd3(s, kw["patch_size"], kw["in_channels"]),
    text_encoder=ClipT5Encoder, text_folders=tuple(RELEASE_FOLDERS), normalization=OFFICIAL_NORMALIZATION)
MINIFLUX = ReleaseKind(
    name="miniflux", label="miniFLUX release", table_name="miniFLUX release", folder_prefix="miniflux-",
    pipeline_model_name="pyramid_flux", model_class=MiniFluxDiT,
    is_config=is_miniflux_config, load_transformer=load_miniflux_layout,
    kwargs_from_config=miniflux_kwargs, config_from_kwargs=miniflux_config_from_suite,
    state_from_release=lambda s, c: release_to_suite(s), state_to_release=lambda s, kw: suite_to_release(s),
    text_encoder=ClipLT5Encoder,
    text_folders=tuple(MINIFLUX_FOLDERS),
    # their pipeline with model_name "pyramid_flux": frame 0 with the FLUX-paired image statistics (shift -0.04,
    # scale 1/1.8726), later frames with the video statistics both releases share
    normalization=Normalization(-0.04, 1 / 1.8726, OFFICIAL_NORMALIZATION.video_shift,
                                OFFICIAL_NORMALIZATION.video_scale))
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

    def transformer_kwargs(self, resolution: str) -> dict:
        """The model class's constructor arguments for the transformer at `resolution`, from its config.json only
        (no weights read: the memory plan builds the class on the meta device with them)."""
        return self.kind.kwargs_from_config(json.loads((self.transformer(resolution) / "config.json").read_text()))

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
    through it (cliutil.config_from_args, workflow.Plan). The result is checked again (tree.check_consistency):
    the profile's frame sizes and counts must suit the release's 8x8x8 VAE and patch 2."""
    rel = config_release(cfg)
    if rel is None:
        return cfg
    k = rel.kind
    c = copy.deepcopy(cfg)
    c.vae.latent_channels, c.vae.spatial_compression = k.latent_channels, k.spatial_compression
    c.vae.temporal_compression, c.model.patch_size = k.temporal_compression, k.patch_size
    check_consistency(c)
    # as user overrides too, so that the config of another experiment (config.for_experiment) has them
    geometry = {"vae": {"latent_channels": k.latent_channels, "spatial_compression": k.spatial_compression,
                        "temporal_compression": k.temporal_compression}, "model": {"patch_size": k.patch_size}}
    c._user_overrides = deep_merge(getattr(cfg, "_user_overrides", None) or {}, geometry)
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


# --------------------------------------------------------------------------------------------------------------
# Export: a fine-tuned release model back into the release's layout (`pyramid-repro export`, docs/release.md)
# --------------------------------------------------------------------------------------------------------------

TRANSFORMER_FILE = "diffusion_pytorch_model.safetensors"
EXPORT_RECORD = "export.json"
LINK_MODES = ("hardlink", "symlink", "copy")


def release_of_class(cls: type) -> ReleaseKind | None:
    """The release whose model class `cls` is; None for the suite's own models (nothing to export them to)."""
    return next((k for k in RELEASES.values() if k.model_class is cls), None)


def file_dtypes(folder: Path) -> dict[str, torch.dtype]:
    """{weight name: dtype} of a transformer folder's *.safetensors files, from their headers (nothing loaded)."""
    from safetensors import safe_open

    names = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    out: dict[str, torch.dtype] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                out[k] = names.get(h.get_slice(k).get_dtype(), torch.float32)
    return out


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _place(src: Path, dst: Path, link: str) -> None:
    """`src` (a folder of the release) at `dst`: a symlink to it, a tree of hard links (copies where the file system
    refuses), or a copy."""
    if link == "symlink":
        dst.symlink_to(src.resolve(), target_is_directory=True)
    else:
        shutil.copytree(src, dst, copy_function=_link_or_copy if link == "hardlink" else shutil.copy2)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def export_release(model: DiTModel, release: Release, resolution: str, to: str | Path,
                   dtype: torch.dtype | None = None, link: str = "hardlink", force: bool = False,
                   source: str = "") -> Path:
    """Write `model` (the release's class, e.g. fine-tuned from `release`) as a release folder at `to` that the
    authors' pipeline loads (`PyramidDiTForVideoGeneration(to, model_name=<pipeline_model_name>,
    model_variant="diffusion_transformer_<resolution>")`) and `find_release` recognises:
    `<to>/diffusion_transformer_<resolution>/config.json` (the release's own, architecture checked) and
    diffusion_pytorch_model.safetensors (the release's names, written atomically), beside the release's VAE and
    text-encoder folders (hard links by default; `link` symlink or copy). Weights are written in the dtype of the
    release's file, weight by weight (`dtype` None), else in `dtype`. `source` names the model in export.json.
    ConfigError: a model of another class, an incomplete release, a target folder that exists and is not empty
    (without `force`), the release folder itself as the target."""
    from safetensors.torch import save

    kind, to = release.kind, Path(to)
    if not isinstance(model, kind.model_class):
        raise ConfigError(f"a {type(model).__name__} is not the {kind.label}'s model class "
                          f"({kind.model_class.__name__}): export it with its own release folder")
    if link not in LINK_MODES:
        raise ConfigError(f"link={link!r}: expected one of {', '.join(LINK_MODES)}")
    release.check(resolution)
    if to.resolve() == release.root.resolve():
        raise ConfigError(f"--to {to}: that is the release folder itself; export to a new folder")
    folder = release.transformer(resolution)
    targets = [to / kind.resolutions[resolution].folder] + [to / n for n in (VAE_FOLDER, *kind.text_folders)]
    if to.exists() and any(to.iterdir()):
        if not force:
            raise ConfigError(f"--to {to}: exists and is not empty (pass --force to replace the release folders in "
                              "it)")
        for t in targets:
            _remove(t)
    state, config = kind.to_release(model.state_dict(), dict(model.config),
                                    json.loads((folder / "config.json").read_text()))
    dtypes = file_dtypes(folder) if dtype is None else {}
    state = {k: v.detach().to("cpu", dtype or dtypes.get(k, v.dtype)).contiguous() for k, v in state.items()}
    atomic_write_bytes(targets[0] / TRANSFORMER_FILE, save(state, metadata={"format": "pt"}))
    write_json(targets[0] / "config.json", config)
    for t in targets[1:]:
        _place(release.root / t.name, t, link)
    write_json(to / EXPORT_RECORD, {"release": str(release.root.resolve()), "kind": kind.name,
                                    "pipeline_model_name": kind.pipeline_model_name, "resolution": resolution,
                                    "model": source, "link": link, "git_commit": git_commit(),
                                    "created": utc_now()})
    return to
