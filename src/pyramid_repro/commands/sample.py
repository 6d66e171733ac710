"""`pyramid-repro sample`: generate a prompt suite's videos with a DiT checkpoint (eval/sample.py), or with the
authors' released Pyramid Flow folder under their official settings (eval/release.py, docs/release.md).

Also owns the release options (`add_release_args`, `release_plan`) that `pyramid-repro compare` shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyramid_repro.cliutil import add_threads_arg, config_from_args, config_parser
from pyramid_repro.config import ConfigError
from pyramid_repro.device import config_device
from pyramid_repro.eval import release
from pyramid_repro.eval.sample import run, sample_release
from pyramid_repro.generation.capture import CLI_CAPTURE_CHOICES, check_capture
from pyramid_repro.releases import all_resolutions, find_release


def add_release_args(ap: argparse.ArgumentParser) -> None:
    """Options of a --checkpoint that is the authors' release folder (eval/release.py, docs/release.md)."""
    g = ap.add_argument_group("the authors' release (when --checkpoint is its folder)")
    g.add_argument("--resolution", choices=sorted(all_resolutions()),
                   help="which released transformer (default: the folder given, else the smallest present)")
    g.add_argument("--latent-frames", type=int, help="latent frames per video (default 16 = 5 s at 24 fps; 768p: "
                   "up to 31 = 10 s)")
    g.add_argument("--size", help="WIDTHxHEIGHT pixels instead of the resolution's own (640x384 / 1280x768), "
                   "multiples of 64: a cheaper look, not the authors' setting")
    g.add_argument("--guidance", type=float, help="first-frame guidance (official: 7; the authors suggest 7-9 "
                   "at 768p)")
    g.add_argument("--video-guidance", type=float, help="later-frame guidance (official: 5, image-to-video 4)")
    g.add_argument("--preset", choices=sorted(release.PROTOCOLS),
                   help="paper-vbench: what the authors scored on VBench (768p, 121 frames at 24 fps, the negative "
                   "prompt, guidance 7 / video 5); fixes --resolution/--latent-frames and refuses --size, --image "
                   "and the guidance options")


def add_method_args(ap: argparse.ArgumentParser) -> None:
    """The explicit override of a suite checkpoint's own sampling method (eval/method.py)."""
    ap.add_argument("--override-method", action="store_true",
                    help="sample a suite checkpoint with the method (pyramid.*, model.attention) that "
                    "--experiment/--set give even where it contradicts the checkpoint's train_config.yaml (without "
                    "it that is an error); the progress bar, samples.json and the compare row list each override")


def check_release_only(args: argparse.Namespace, rel) -> None:
    """Release options given for a checkpoint that is not the authors' release: a ConfigError naming them."""
    if rel is not None:
        return
    given = [f"--{k.replace('_', '-')}" for k in ("resolution", "latent_frames", "size", "guidance",
                                                  "video_guidance", "preset") if getattr(args, k, None) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only for the authors' release folder as --checkpoint; a suite "
                          "checkpoint is sampled with its own method (train_config.yaml; --override-method)")


def release_plan(args: argparse.Namespace) -> release.ReleaseRun | None:
    """The ReleaseRun of the command line when --checkpoint is a release folder, else None."""
    if args.checkpoint is None or find_release(args.checkpoint) is None:
        return None
    return release.plan(args.checkpoint, args.resolution, args.latent_frames, args.size, args.image,
                        args.guidance, args.video_guidance, args.preset)


def main(argv: list[str] | None = None) -> int:
    ap = config_parser(
        "sample",
        "Generate the prompt suite's videos with an experiment's final checkpoint (VBench file "
        "layout: <prompt>-<index>.mp4 + samples.json + contact_sheet.png). --checkpoint may also be the authors' "
        "released Pyramid Flow folder, sampled with their official settings (docs/release.md).",
    )
    ap.add_argument("--suite", help="prompt suite (default: eval.suite)")
    ap.add_argument("--out", type=Path, help="output folder (default results/<profile>/<experiment>/samples/<suite>, "
                    "for the release results/<profile>/release-<resolution>/samples/<suite>)")
    ap.add_argument("--checkpoint", type=Path, help="a DiT checkpoint folder instead of the experiment's own "
                    "(sampled with its own method, from the train_config.yaml beside it; --experiment is then "
                    "optional), or the authors' release folder")
    ap.add_argument("--image", type=Path, help="image-to-video: this image is the first frame of every video")
    add_release_args(ap)
    add_method_args(ap)
    add_threads_arg(ap)
    ap.add_argument("--batch-size", type=int, default=0, help="videos per batch (default 16; the release: 1)")
    ap.add_argument("--capture", choices=CLI_CAPTURE_CHOICES, default="none",
                    help="none (default): eager Euler steps. cuda-graph: needs a CUDA device; records each frame "
                    "and stage's denoising step once as a CUDA graph and replays it for the stage's other Euler "
                    "steps, which removes the per-step kernel launch overhead (same result)")
    args = ap.parse_args(argv)
    rel = release_plan(args)
    check_release_only(args, rel)
    cfg = config_from_args(args, require_experiment=rel is None and args.checkpoint is None)
    check_capture(args.capture, config_device(cfg), "--capture")
    suite = args.suite or cfg.eval.suite
    if rel is not None:
        out = args.out or cfg.layout.samples(rel.name, suite)
        print(f"sampling {rel.label}\n  {rel.preset.describe()}")
        path = sample_release(cfg, rel, suite, out, args.batch_size or 1, args.capture)
    else:
        path = run(cfg, args.experiment, suite, args.out, args.checkpoint, args.batch_size or 16, args.image,
                   args.capture, args.override_method)
    print(f"wrote {path}")
    return 0
