"""`pyramid-repro sample`: generate a prompt suite's videos with an experiment's final DiT checkpoint.

Writes, VBench-style, <out>/<prompt text>-<sample index>.mp4 for every prompt and sample, a samples.json index
({"suite", "experiment", "samples": [{prompt_id, prompt, sample_index, seed, path}]}) with provenance, and a
contact-sheet PNG (frames of the first prompts over time) for looking at the result. Inference-only experiments
(e.g. no_corrective_noise) sample the checkpoint of `checkpoint_from` under their own sampler settings.
Each batch's generator is seeded from its first (prompt, sample); samples.json records that seed and the batch
size, which together reproduce every video.

Its command line (options, messages) is commands/sample.py.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.data.video_io import write_video
from pyramid_repro.device import autocast, config_device, generator
from pyramid_repro.eval import release
from pyramid_repro.eval.method import TRAIN_CONFIG, resolve_method
from pyramid_repro.eval.prompts import load_suite
from pyramid_repro.experiments import get_experiment
from pyramid_repro.generation.generate import TextCondition, generate_latents, kv_cache_exact
from pyramid_repro.models import load_dit
from pyramid_repro.provenance import provenance, write_json
from pyramid_repro.releases import text_encoder_for, vae_for
from pyramid_repro.vae.handle import decode_latents


def sample_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """Deterministic seed of one (prompt, sample), independent of which other prompts are sampled."""
    h = hashlib.sha256(f"{seed}/{prompt_id}/{sample_index}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def video_filename(prompt: str, sample_index: int) -> str:
    """VBench's naming: '<prompt>-<index>.mp4' (path separators and control characters replaced)."""
    safe = re.sub(r"[/\\\x00-\x1f]", "_", prompt).strip()[:180]
    return f"{safe}-{sample_index}.mp4"


def to_uint8(video: torch.Tensor, truncate: bool = False) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3).

    The suite's own models (``truncate=False``): ``round((v + 1) * 127.5)``, the nearest level. The authors'
    presets (``truncate=True``, eval/release.py): as their pipeline's ``decode_latent``, ``(v / 2 + 0.5)`` clamped
    to [0, 1], times 255, then ``.byte()``, which truncates toward zero (0.6/255 becomes level 0, not 1; about
    half the pixels of a video land one level lower than with rounding)."""
    if truncate:
        v = ((video / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
    else:
        v = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return v.permute(1, 2, 3, 0).cpu().numpy()


def first_frame_latent(vae, image: torch.Tensor, seeds: list[int] | None = None) -> torch.Tensor:
    """The normalised VAE latent (B, C, h, w) of an image-to-video first frame `image` (1, 3, 1, H, W).

    Our own models (``seeds=None``): the posterior mean, one latent for every video (B = 1, expanded by the
    caller). The authors' presets: one draw per seed from the posterior, as their pipeline's
    ``encode(...).latent_dist.sample()``, each seeded by its sample's seed (same seed, same latent)."""
    if seeds is None:
        return vae.encode(image)[:, :, 0]
    return torch.cat([vae.encode(image, generator=generator(s, vae.device))[:, :, 0] for s in seeds])


def contact_sheet(videos: list[np.ndarray], captions: list[str], path: Path, max_frames: int = 9) -> None:
    """Rows = videos, columns = frames evenly spaced in time; caption left of each row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(videos)
    T = videos[0].shape[0]
    cols = np.linspace(0, T - 1, min(max_frames, T)).round().astype(int)
    fig, axes = plt.subplots(n, len(cols), figsize=(1.2 * len(cols) + 3, 1.25 * n), squeeze=False)
    for r, (v, c) in enumerate(zip(videos, captions)):
        for j, t in enumerate(cols):
            ax = axes[r][j]
            ax.imshow(v[t], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t}", fontsize=7)
        axes[r][0].set_ylabel(c[:60], rotation=0, ha="right", va="center", fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """An image file -> (1, 3, 1, H, W) in [-1, 1], resized to size = (H, W) pixels (the first frame of
    image-to-video)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--image {path}: file not found")
    img = Image.open(path).convert("RGB").resize((size[1], size[0]), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    return x[:, None][None]


def sample_videos(model, encoder, vae, cfg: Config, prompts: list, out: Path, latent_frames: int,
                  latent_size: tuple[int, int], *, label: str, batch_size: int = 16, negative_prompt: str = "",
                  prompt_suffix: str = "", image: Path | None = None, fps: int | None = None,
                  capture: str = "none", official: bool = False) -> list[dict]:
    """Generate cfg.eval.samples_per_prompt videos per prompt into `out` (VBench names) and a contact sheet;
    returns the samples.json records. Classifier-free guidance contrasts each prompt (+ `prompt_suffix`) with
    `negative_prompt` (the empty prompt by default); `image` makes it image-to-video (its VAE latent is the
    first frame of every video). Pyramid models sample with the history KV cache where it is exact
    (`kv_cache_exact`); `capture` records each stage's Euler step once and replays it
    (generation/capture.py; ``cuda-graph`` needs CUDA). `official` (the authors' presets, eval/release.py):
    frames to uint8 by truncation and the image-to-video latent drawn from the posterior, seeded by each sample's
    seed (`to_uint8`, `first_frame_latent`); otherwise rounding and the posterior mean (our own models)."""
    jobs = [(p, i) for p in prompts for i in range(cfg.eval.samples_per_prompt)]
    kv_cache = kv_cache_exact(model)  # history keys/values once per (frame, stage) wherever that is exact
    dev = vae.device
    empty = TextCondition(*encoder.encode([negative_prompt]))
    first = img = None
    if image is not None:
        s = cfg.vae.spatial_compression
        img = load_image(image, (latent_size[0] * s, latent_size[1] * s)).to(dev)
        if not official:
            first = first_frame_latent(vae, img)
    out.mkdir(parents=True, exist_ok=True)
    records, sheet = [], []
    with tqdm(total=len(jobs), desc=f"sample {label}", unit="video") as bar:
        for b in range(0, len(jobs), batch_size):
            chunk = jobs[b: b + batch_size]
            text = TextCondition(*encoder.encode([p.text + prompt_suffix for p, _ in chunk]))
            # one generator per batch, seeded from its first sample: deterministic for a fixed batch size
            seed = sample_seed(cfg.seed, chunk[0][0].id, chunk[0][1])
            g = generator(seed, dev)
            if img is not None and official:  # one posterior draw per sample, seeded by its seed
                ff = first_frame_latent(vae, img, [sample_seed(cfg.seed, p.id, i) for p, i in chunk])
            else:
                ff = None if first is None else first.expand(len(chunk), -1, -1, -1)
            with autocast(dev, cfg.train.precision):
                lat = generate_latents(model, cfg, text, empty, latent_frames, latent_size, g, first_frame=ff,
                                       kv_cache=kv_cache, capture=capture)
            videos = decode_latents(vae, lat.float())
            for (p, i), v in zip(chunk, videos):
                frames = to_uint8(v, truncate=official)
                name = video_filename(p.text, i)
                write_video(out / name, frames, fps=fps or cfg.data.fps)
                records.append({"prompt_id": p.id, "prompt": p.text, "sample_index": i,
                                "seed": seed, "batch_size": batch_size, "path": name})
                if i == 0 and len(sheet) < 12:
                    sheet.append((frames, p.text))
            bar.update(len(chunk))
    contact_sheet([f for f, _ in sheet], [c for _, c in sheet], out / "contact_sheet.png")
    return records


def suite_prompts(cfg: Config, suite: str) -> list:
    """The prompts of `suite`, cut to eval.max_prompts; an empty suite is a ConfigError."""
    prompts = load_suite(suite, cfg)
    if cfg.eval.max_prompts:
        prompts = prompts[: cfg.eval.max_prompts]
    if not prompts:
        raise ConfigError(f"prompt suite '{suite}' is empty (eval.suite / eval.max_prompts)")
    return prompts


def samples_protocol(fps: int, latent_frames: int, latent_size: tuple[int, int], cfg: Config,
                     prompt_set: str = "standard", prompt_suffix: str = "") -> dict:
    """What a scorer needs to know about how the videos were made (samples.json `protocol`; the VBench backend
    copies it into the metrics JSON): fps, pixel frames, pixel size, the prompt set and any suffix."""
    s, t = cfg.vae.spatial_compression, cfg.vae.temporal_compression
    return {"fps": int(fps), "frames": 1 + (latent_frames - 1) * t, "height": latent_size[0] * s,
            "width": latent_size[1] * s, "prompt_set": prompt_set, "prompt_suffix": prompt_suffix}


def run(cfg: Config, experiment: str | None, suite: str, out: Path | None = None, checkpoint: Path | None = None,
        batch_size: int = 16, image: Path | None = None, capture: str = "none",
        override_method: bool = False) -> Path:
    """Sample `suite` with `experiment`'s checkpoint (or an explicit `checkpoint` folder); returns samples.json.

    The sampling method (pyramid stages, temporal pyramid, attention, steps, guidance) is the checkpoint's own,
    read from the train_config.yaml beside its weights (eval/method.py `resolve_method`): `experiment` (None when
    only `checkpoint` is given) and the config's user overrides must agree with it, unless the experiment is
    inference-only (its overrides are the point) or `override_method`. The progress bar and samples.json name the
    method. (`main` sends a folder of the authors' release to `sample_release`, which samples it with their
    settings.) A checkpoint fine-tuned from a release (its train_config.yaml names it: eval/release.py
    `finetuned_run`) is sampled with the release's text encoders and VAE, and with `eval.release_sampler: release`
    (the default) by `sample_release` exactly as the release is (its preset, one video per batch, so its videos and
    the release's share prompts and seeds); with `profile`, with the profile's pyramid.sampler
    (eval/release.py `settle_finetuned`)."""
    if experiment is None and checkpoint is None:
        raise ConfigError("sample: pass --experiment or --checkpoint")
    exp = get_experiment(experiment) if experiment is not None else None
    ckpt = checkpoint or cfg.layout.stage_final(exp.checkpoint_from or experiment, cfg.train.curriculum[-1].name)
    name = experiment or Path(ckpt).resolve().name
    out = out or cfg.layout.samples(name, suite)
    tuned = release.settle_finetuned(cfg, Path(ckpt), experiment, override_method, image)
    if tuned is not None:  # one video per batch, as the release: the pairs share their seeds
        return sample_release(tuned[0], tuned[1], suite, out, 1, capture, experiment, tuned[2])
    cfg, method = resolve_method(cfg, ckpt, experiment, override_method)
    dev = config_device(cfg)
    model = load_dit(ckpt, dev, cfg.model.attention_kernel)
    encoder = text_encoder_for(cfg, dev)  # a fine-tuned release's own text encoders and VAE (releases.py)
    vae = vae_for(cfg, cfg.vae.encode_chunk_frames, dev)
    prompts = suite_prompts(cfg, suite)
    last = cfg.train.curriculum[-1]
    s, T = cfg.vae.spatial_compression, cfg.vae.temporal_compression
    latent_frames = 1 + (last.frames - 1) // T
    size = (last.height // s, last.width // s)
    records = sample_videos(model, encoder, vae, cfg, prompts, out, latent_frames, size,
                            label=f"{name} [{method.label}]", batch_size=batch_size, image=image, capture=capture)
    index = out / "samples.json"
    write_json(index, {"suite": suite, "experiment": experiment, "checkpoint": str(ckpt), "samples": records,
                       "method": method.to_dict(),
                       "protocol": samples_protocol(cfg.data.fps, latent_frames, size, cfg),
                       "image": str(image) if image else None, "provenance": provenance(cfg, experiment=experiment)})
    return index


def sample_release(cfg: Config, release_run: release.ReleaseRun, suite: str, out: Path, batch_size: int = 1,
                   capture: str = "none", experiment: str | None = None, method: str | None = None) -> Path:
    """Sample `suite` with the authors' release (eval/release.py) under its official settings into `out`; returns
    samples.json. The authors' presets convert frames to uint8 by truncation and draw the image-to-video latent
    from the posterior (`SamplerPreset.official_conversions`). `capture`: generation/capture.py (``cuda-graph``
    needs CUDA). A fine-tuned run (`release_run.checkpoint`) keeps `cfg`'s pyramid schedule (its own method,
    settled by the caller) under the preset's sampler; `experiment` and `method` (its label) name it in
    samples.json."""
    rr = release_run
    c = release.release_config(cfg, rr.preset, rr.kind, cfg.pyramid if rr.checkpoint is not None else None)
    model, encoder, vae = release.load_release(rr, config_device(c), c.train.precision == "bf16",
                                               c.model.attention_kernel)
    prompts = suite_prompts(c, suite)
    s = c.vae.spatial_compression
    records = sample_videos(model, encoder, vae, c, prompts, out, rr.latent_frames,
                            (rr.size[0] // s, rr.size[1] // s), label=f"{rr.name} [{rr.preset.name}]",
                            batch_size=batch_size, negative_prompt=rr.preset.negative_prompt,
                            prompt_suffix=rr.preset.prompt_suffix, image=rr.image, fps=rr.kind.fps, capture=capture,
                            official=rr.preset.official_conversions)
    index = out / "samples.json"
    size = (rr.size[0] // s, rr.size[1] // s)
    write_json(index, {"suite": suite, "experiment": experiment or "release",
                       "checkpoint": str(rr.checkpoint or rr.root), "model": rr.label, "release": rr.to_dict(),
                       "samples": records,
                       "method": {"method": method or rr.preset.describe(),
                                  "source": "eval/release.py PRESETS" if rr.checkpoint is None
                                  else f"{rr.checkpoint / TRAIN_CONFIG} and eval/release.py PRESETS",
                                  "overrides": []},
                       "protocol": samples_protocol(rr.kind.fps, rr.latent_frames, size, c,
                                                    prompt_suffix=rr.preset.prompt_suffix),
                       "provenance": provenance(c)})
    return index
