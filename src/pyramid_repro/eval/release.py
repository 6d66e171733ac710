"""Sampling the authors' released Pyramid Flow checkpoints (SD3-based and miniFLUX, 384p and 768p) offline
(docs/release.md).

The suite downloads nothing: the user fetches the release folder and points `sample --checkpoint` or
`compare --checkpoint` at it. What a release is (its folder layout, model class, text encoder, VAE normalisation,
resolutions) is its record in releases.py; this module holds how a release is sampled.

What is loaded (the record's loaders): the SD3 transformer into `OfficialPyramidDiT` (models/official.py, strict
key-by-key conversion, the authors' QK-norm epsilon), the VAE into `OfficialCausalVAE` with the release's latent
normalisation, the text encoders with `ClipT5Encoder.from_release`. What is sampled: the authors' inference settings
(`PRESETS`; their pipeline's defaults and README): Euler steps [20, 20, 20] for the first frame and [10, 10, 10] for
later frames, guidance 7 on the first frame and 5 on later ones (image-to-video: [10, 10, 10] and 4), the negative
prompt in place of the empty prompt, a quality suffix appended to every prompt, 24 fps, 16 latent frames (5 s; the
768p model goes up to 31 = 10 s). The pyramid schedule (3 stages, stage boundaries 0, 1/3, 2/3, 1, corrective noise
gamma 1/3, clean history in the temporal pyramid's layout) is the suite's default `pyramid` config, which equals
theirs.

The later miniFLUX release (their `model_name="pyramid_flux"`) has the same folder names except the text half:
text_encoder/ (CLIP-L) and text_encoder_2/ (T5-XXL) with tokenizer/ and tokenizer_2/, no text_encoder_3/. It is
recognised by its transformer config.json (`_class_name: PyramidFluxTransformer`, `Release.model`) and loaded into
`MiniFluxDiT` (models/miniflux.py, strict converter), `ClipLT5Encoder.from_release`, and the same VAE with the
miniFLUX image-latent normalisation (its record's `normalization`: shift -0.04, scale 1/1.8726). Its sampling
settings are the same presets (their README gives the same steps and guidance for both releases). Its 1024p image
transformer (diffusion_transformer_image/) is not supported.

A checkpoint fine-tuned from a release (the suite's save_pretrained folder whose train_config.yaml has `release`
set, docs/release.md §12) carries the release's method: `finetuned_run` makes the `ReleaseRun` of it (the release's
text encoders, VAE and presets, the fine-tuned transformer), sampled by the same code as the release, at the
profile's video size and length.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pyramid_repro.config import Config, ConfigError, PyramidConfig, SamplerConfig
from pyramid_repro.eval.method import TRAIN_CONFIG, SamplingMethod, describe_method, read_train_config, resolve_method
from pyramid_repro.models import load_dit
from pyramid_repro.models.attention import DEFAULT_KERNEL, set_kernel
from pyramid_repro.releases import (
    DEFAULT_LATENT_FRAMES,
    FPS,
    RELEASES,
    SD3,
    Release,
    ReleaseKind,
    apply_release,
    open_release,
)

VAE_CHUNK_FRAMES, VAE_TILE = 1, 256  # the authors' decode_latent(save_memory=True): window 1, tiles of 256 px


# the authors' pipeline's defaults (generate / generate_i2v)
NEGATIVE_PROMPT = ("cartoon style, worst quality, low quality, blurry, absolute black, absolute white, low res, "
                   "extra limbs, extra digits, misplaced objects, mutated anatomy, monochrome, horror")
PROMPT_SUFFIX = ", hyper quality, Ultra HD, 8K"


@dataclass(frozen=True)
class SamplerPreset:
    """Inference settings of the authors' pipeline."""

    name: str
    steps_first_frame: tuple[int, ...]
    steps_later_frames: tuple[int, ...]
    guidance_first_frame: float
    guidance_video: float
    negative_prompt: str = NEGATIVE_PROMPT
    prompt_suffix: str = PROMPT_SUFFIX
    # the authors' conversions (eval/sample.py): frames to uint8 by truncation (`.byte()`) and the image-to-video
    # latent drawn with `latent_dist.sample()` seeded by the sample's seed; the suite's own models round and take
    # the posterior mean
    official_conversions: bool = True

    def describe(self) -> str:
        """One line for tables and samples.json."""
        steps = "/".join(",".join(map(str, s)) for s in (self.steps_first_frame, self.steps_later_frames))
        prompts = "".join([", negative prompt" if self.negative_prompt else "",
                           f", prompt suffix {self.prompt_suffix.strip()!r}" if self.prompt_suffix else ""])
        return (f"{self.name}: Euler steps {steps}, guidance {self.guidance_first_frame:g} (first frame) / "
                f"{self.guidance_video:g} (video){prompts}")


PRESETS = {
    "official-t2v": SamplerPreset("official-t2v", (20, 20, 20), (10, 10, 10), 7.0, 5.0),
    # image-to-video: the first frame is given, later frames use [10, 10, 10] steps and video guidance 4
    "official-i2v": SamplerPreset("official-i2v", (10, 10, 10), (10, 10, 10), 7.0, 4.0),
    # the paper's VBench protocol (PROTOCOLS below): the text-to-video settings with video guidance 5
    "paper-vbench": SamplerPreset("paper-vbench", (20, 20, 20), (10, 10, 10), 7.0, 5.0),
}


@dataclass(frozen=True)
class Protocol:
    """What a VBench number was generated and scored under: it is comparable with the paper's only when these
    fields agree (docs/release.md §7). `vbench_mode` None: not stated by the authors."""

    resolution: str  # the released transformer
    fps: int
    frames: int  # pixel frames per video
    width: int
    height: int
    vbench_mode: str | None = None
    prompt_set: str = "standard"

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // 8  # 8x temporal VAE

    def to_dict(self) -> dict:
        return {"resolution": self.resolution, "fps": self.fps, "frames": self.frames, "width": self.width,
                "height": self.height, "vbench_mode": self.vbench_mode, "prompt_set": self.prompt_set}


# The protocol behind the paper's VBench 81.72, as the authors answered users reproducing it: the SD3 model at
# 768p, 121 frames (16 latent frames, 5 s) at 24 fps, the negative prompt, video guidance 5. The VBench mode is not
# stated (VBench's README asks for VBench-Long for videos of 5 s or more): None, so it is recorded, never flagged.
PAPER_PROTOCOL = Protocol("768p", FPS, 121, 1280, 768, None, "standard")
# preset name -> the protocol it generates (a preset not listed samples at the command line's resolution/frames)
PROTOCOLS = {"paper-vbench": PAPER_PROTOCOL}


def protocol_differences(protocol: dict | None, paper: Protocol = PAPER_PROTOCOL) -> list[str]:
    """The fields of a recorded protocol (metrics JSON / samples.json `protocol`: fps, frames, width, height,
    vbench_mode) that differ from the paper's, each as 'field ours vs paper'; fields missing on either side are
    not compared. [] when comparable."""
    if not protocol:
        return ["no protocol recorded"]
    ref = paper.to_dict()
    out = []
    for key in ("fps", "frames", "width", "height", "vbench_mode"):
        a, b = protocol.get(key), ref.get(key)
        if a is not None and b is not None and a != b:
            out.append(f"{key} {a} vs {b}")
    return out


def resolution_of(release: Release, folder: Path, resolution: str | None) -> str:
    """The resolution asked for, else the one of the transformer folder given, else the only/smallest one."""
    if resolution:
        return resolution
    for name, res in release.kind.resolutions.items():
        if Path(folder).name == res.folder:
            return name
    folders = [r.folder + "/" for r in release.kind.resolutions.values()]
    if Path(folder).name.startswith("diffusion_transformer_"):
        raise ConfigError(f"{folder}: this suite samples the {release.kind.label}'s video transformers "
                          f"({', '.join(folders)}) only (not, e.g., the miniFLUX release's 1024p image model)")
    have = release.resolutions()
    if not have:
        raise ConfigError(f"{release.root}: no {' or '.join(folders)} with a config.json")
    return have[0]


def release_config(cfg: Config, preset: SamplerPreset, kind: ReleaseKind = SD3,
                   pyramid: PyramidConfig | None = None) -> Config:
    """`cfg` with what the release fixes: the authors' pyramid schedule and sampler settings, the release's latent
    geometry (16 latent channels, 8x8x8 VAE, patch 2) and fps. Prompts, seeds, samples per prompt, device and
    precision stay the profile's. `pyramid`: the schedule of a fine-tuned checkpoint (its own method, e.g. an
    inference-only experiment's corrective noise off) instead of the authors' default, with the preset's sampler."""
    c = copy.deepcopy(cfg)
    c.pyramid = copy.deepcopy(pyramid) if pyramid is not None else PyramidConfig()
    c.pyramid.sampler = SamplerConfig(
        steps_first_frame=list(preset.steps_first_frame), steps_later_frames=list(preset.steps_later_frames),
        guidance_first_frame=preset.guidance_first_frame, guidance_video=preset.guidance_video)
    c.vae.latent_channels, c.vae.spatial_compression = kind.latent_channels, kind.spatial_compression
    c.vae.temporal_compression = kind.temporal_compression
    c.model.patch_size = kind.patch_size
    c.data.fps = kind.fps
    return c


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' in pixels -> (height, width); both multiples of 64 (8x VAE, 3-stage pyramid, patch 2)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 640x384") from None
    if w % 64 or h % 64 or w <= 0 or h <= 0:
        raise ConfigError(f"--size {text}: width and height must be positive multiples of 64 (8x VAE, three "
                          "pyramid stages of 2x, patch 2)")
    return h, w


@dataclass(frozen=True)
class ReleaseRun:
    """What one sampling of the release used: shown in samples.json and in the compare table."""

    root: Path
    resolution: str
    preset: SamplerPreset
    latent_frames: int
    size: tuple[int, int]  # (height, width) pixels
    image: Path | None = None  # image-to-video: the first frame of every video
    model: str = SD3.name  # which release: a key of releases.RELEASES
    # a checkpoint fine-tuned from the release (save_pretrained folder) sampled in place of its transformer, and
    # what it was fine-tuned as ("<experiment>, <steps> steps")
    checkpoint: Path | None = None
    finetune: str = ""

    @property
    def kind(self) -> ReleaseKind:
        return RELEASES[self.model]

    @property
    def name(self) -> str:
        """The run's name in folders and file names: release-<folder_prefix><resolution> (release-384p for the SD3
        release, release-miniflux-384p); a fine-tuned checkpoint: finetuned-<folder_prefix><resolution>-<experiment>."""
        if self.checkpoint is not None:
            return f"finetuned-{self.kind.folder_prefix}{self.resolution}-{self.finetune.split(',')[0]}"
        return f"release-{self.kind.folder_prefix}{self.resolution}"

    @property
    def release_name(self) -> str:
        """The name of the release's own run (what a fine-tuned checkpoint is paired with)."""
        return replace(self, checkpoint=None).name

    @property
    def label(self) -> str:
        h, w = self.size
        settings = f"{self.preset.name}, {w}x{h}, {self.latent_frames} latent frames"
        if self.checkpoint is not None:
            return f"fine-tuned {self.kind.label} {self.resolution} ({self.finetune}; {settings})"
        return f"Pyramid Flow {self.kind.table_name} {self.resolution} ({settings})"

    def to_dict(self) -> dict:
        return {"release": str(self.root), "model": self.model, "resolution": self.resolution,
                "preset": self.preset.name, "settings": self.preset.describe(), "latent_frames": self.latent_frames,
                "height": self.size[0], "width": self.size[1], "fps": self.kind.fps,
                "image": str(self.image) if self.image else None,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None, "finetune": self.finetune or None}


def _protocol_args(preset: str, resolution: str | None, latent_frames: int | None, size: str | None,
                   image: Path | None, guidance: float | None, video_guidance: float | None) -> tuple[str, int]:
    """The resolution and latent frames a protocol preset fixes; a ConfigError naming the option that would
    change what the preset generates."""
    proto = PROTOCOLS[preset]
    clash = [f"{opt} {val}" for opt, val, want in (
        ("--resolution", resolution, proto.resolution), ("--latent-frames", latent_frames, proto.latent_frames))
        if val is not None and val != want]
    clash += [f"{opt}" for opt, val in (("--size", size), ("--image", image), ("--guidance", guidance),
                                        ("--video-guidance", video_guidance)) if val is not None]
    if clash:
        raise ConfigError(f"--preset {preset}: generates the paper's protocol ({proto.resolution}, {proto.frames} "
                          f"frames at {proto.fps} fps, {PRESETS[preset].describe()}); drop {', '.join(clash)}")
    return proto.resolution, proto.latent_frames


def plan(folder: str | Path, resolution: str | None = None, latent_frames: int | None = None,
         size: str | None = None, image: Path | None = None, guidance: float | None = None,
         video_guidance: float | None = None, preset: str | None = None) -> ReleaseRun:
    """Check the release folder and settle the run: resolution, preset (image-to-video when `image`), frames and
    size (the resolution's own unless given smaller for a quick look), guidance overrides (the authors suggest
    7-9 at 768p). `preset` names a protocol preset of PROTOCOLS (`paper-vbench`: 768p, 16 latent frames = 121
    frames at 24 fps, the negative prompt, guidance 7 / 5), which fixes all of these."""
    rel = open_release(folder, "--checkpoint")
    if preset is not None:
        if preset not in PROTOCOLS:
            raise ConfigError(f"--preset {preset!r}: expected one of {', '.join(PROTOCOLS)}")
        resolution, latent_frames = _protocol_args(preset, resolution, latent_frames, size, image, guidance,
                                                   video_guidance)
    res = resolution_of(rel, Path(folder), resolution)
    rel.check(res)
    r = rel.kind.resolutions[res]
    n = latent_frames or DEFAULT_LATENT_FRAMES
    if not 1 <= n <= r.max_latent_frames:
        k = rel.kind
        seconds = (r.max_latent_frames - 1) * k.temporal_compression // k.fps
        raise ConfigError(f"--latent-frames {n}: the {res} model generates 1 to {r.max_latent_frames} latent frames "
                          f"({seconds} s at {k.fps} fps)")
    preset = PRESETS[preset or ("official-i2v" if image is not None else "official-t2v")]
    if guidance is not None or video_guidance is not None:
        preset = replace(
            preset, name=preset.name + "+custom-guidance",
            guidance_first_frame=preset.guidance_first_frame if guidance is None else guidance,
            guidance_video=preset.guidance_video if video_guidance is None else video_guidance)
    hw = parse_size(size) if size else (r.height, r.width)
    return ReleaseRun(rel.root, res, preset, n, hw, image, rel.model)


def finetuned_run(cfg: Config, checkpoint: Path, image: Path | None = None) -> ReleaseRun | None:
    """The ReleaseRun of a checkpoint fine-tuned from a release (its train_config.yaml has `release` set), None for
    any other checkpoint: the release folder and resolution it was fine-tuned from (checked: a moved or incomplete
    release is a ConfigError naming the train_config.yaml), the release's preset (official-t2v, official-i2v with
    `image`), the profile's video size and length (`cfg`'s last curriculum stage, the protocol of every row of the
    run), and what it was fine-tuned as: the experiment of its done.json and the steps of every stage beside it (the
    curriculum's when no done.json is there)."""
    tc = Path(checkpoint) / TRAIN_CONFIG
    saved = read_train_config(tc) if tc.is_file() else {}
    if not saved.get("release"):
        return None
    res = saved.get("release_resolution") or "384p"
    rel = open_release(saved["release"], f"{tc}: release")
    rel.check(res)
    last = cfg.train.curriculum[-1]
    k = rel.kind
    stage = Path(checkpoint).resolve().parent
    done = [json.loads(f.read_text()) for f in sorted(stage.parent.glob("*/done.json"))]
    own = [d for d in done if d.get("stage") == stage.name]
    experiment = own[0].get("experiment", "pyramid") if own else stage.parent.parent.name
    steps = (sum(int(d.get("steps", 0)) for d in done) if done
             else sum(int(s.get("steps", 0)) for s in saved.get("train", {}).get("curriculum", [])))
    return ReleaseRun(rel.root, res, PRESETS["official-i2v" if image is not None else "official-t2v"],
                      1 + (last.frames - 1) // k.temporal_compression, (last.height, last.width), image, k.name,
                      checkpoint=Path(checkpoint), finetune=f"{experiment}, {steps} steps")


def finetuned_config(cfg: Config, run: ReleaseRun) -> Config:
    """`cfg` fine-tuning `run`'s release (`release`, `release_resolution` and the release's latent geometry), so
    that the shape checks and the release's text encoder and VAE (releases.text_encoder_for / vae_for) follow the
    checkpoint whatever the profile says."""
    c = copy.deepcopy(cfg)
    c.release, c.release_resolution = str(run.root), run.resolution
    return apply_release(c)


def settle_finetuned(cfg: Config, checkpoint: Path, experiment: str | None = None, override_method: bool = False,
                     image: Path | None = None) -> tuple[Config, ReleaseRun, str] | None:
    """How a checkpoint fine-tuned from a release is sampled, None for any other checkpoint: the config (the
    release's geometry, text encoder and VAE; the checkpoint's own method, eval/method.py `resolve_method`, which
    checks `experiment` and --set against it), its ReleaseRun (`finetuned_run`) and the one-line method label. With
    eval.release_sampler `profile` the preset is the profile's pyramid.sampler without negative prompt or suffix,
    frames rounded (the suite's own conversions), named `profile-sampler`."""
    run = finetuned_run(cfg, checkpoint, image)
    if run is None:
        return None
    cfg, method = resolve_method(finetuned_config(cfg, run), Path(checkpoint), experiment, override_method)
    if cfg.eval.release_sampler == "profile":
        s = cfg.pyramid.sampler
        run = replace(run, preset=SamplerPreset("profile-sampler", tuple(s.steps_first_frame),
                                                tuple(s.steps_later_frames), s.guidance_first_frame,
                                                s.guidance_video, "", "", official_conversions=False))
    used = describe_method(release_config(cfg, run.preset, run.kind, cfg.pyramid))
    label = SamplingMethod(f"{used}; {run.preset.describe()}", method.source, method.overrides).label
    return cfg, run, label


def load_release(run: ReleaseRun, device, bf16: bool = True, kernel: str = DEFAULT_KERNEL):
    """(DiT, text encoder, VAE) of the release on `device`, each loaded strictly from its folder; the DiT with the
    attention kernel `kernel` (the config's model.attention_kernel). A fine-tuned run's DiT is its checkpoint
    (models.load_dit), the rest the release's."""
    rel = Release(run.root, run.kind)
    if run.checkpoint is not None:
        model = load_dit(run.checkpoint, device, kernel)
    else:
        model = set_kernel(rel.load_transformer(run.resolution).to(device), kernel)
    # the encoders in bf16 on a GPU as the authors run them (T5-XXL alone is about 19 GB in float32)
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" and bf16 else torch.float32
    encoder = run.kind.load_text_encoder(rel.root, dtype=dtype).to(device)
    # decoded as the authors' pipeline does by default (save_memory): one latent frame per chunk (exact) and
    # 256-pixel tiles blended where they overlap (approximate, as theirs); the first frame's latent
    # normalisation is the release's own
    vae = run.kind.load_vae(rel.root, VAE_CHUNK_FRAMES, device, tile_sample_size=VAE_TILE)
    return model, encoder, vae
