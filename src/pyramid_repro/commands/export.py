"""`pyramid-repro export`: a DiT checkpoint fine-tuned from one of the authors' releases, written back in the
release's own layout, so their pipeline loads it (docs/release.md "Export").

The checkpoint is a folder written by save_pretrained (train-dit's `final/` or a FID snapshot) whose class is a
release's model class (`OfficialPyramidDiT`: the SD3 release, `MiniFluxDiT`: the miniFLUX release). The release it
was fine-tuned from is read from the train_config.yaml beside it (`release`, `release_resolution`), or given with
`--release` / `--resolution`. What is written: releases.py `export_release`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pyramid_repro.config import ConfigError
from pyramid_repro.eval.method import TRAIN_CONFIG, read_train_config
from pyramid_repro.models.registry import dit_class, load_dit
from pyramid_repro.releases import (
    LINK_MODES,
    RELEASES,
    all_resolutions,
    export_release,
    open_release,
    release_of_class,
)

DTYPES = ("release", "float32", "bfloat16", "float16")


def _parser() -> argparse.ArgumentParser:
    layouts = "; ".join(f"{k.label}: {k.model_class.__name__} -> model_name=\"{k.pipeline_model_name}\""
                        for k in RELEASES.values())
    ap = argparse.ArgumentParser(
        prog="pyramid-repro export",
        description="Write a DiT checkpoint fine-tuned from one of the authors' releases in the release's layout: "
        "<to>/diffusion_transformer_<resolution>/ (config.json + diffusion_pytorch_model.safetensors under the "
        "release's weight names) beside the release's causal_video_vae/ and text-encoder folders, so that their "
        "PyramidDiTForVideoGeneration(<to>, model_name=..., model_variant=\"diffusion_transformer_<resolution>\") "
        f"and this suite's `sample --checkpoint <to>` load it ({layouts}). A checkpoint of the suite's own "
        "PyramidDiT has no release layout and is refused. Example: pyramid-repro export --checkpoint "
        "results/<profile>/<experiment>/dit/<stage>/final --to ~/models/pyramid-flow-tuned",
    )
    ap.add_argument("--checkpoint", required=True, type=Path,
                    help="the checkpoint folder (config.json + weights written by save_pretrained, e.g. "
                    "results/<profile>/<experiment>/dit/<stage>/final)")
    ap.add_argument("--to", required=True, type=Path, help="the folder to write (new, or empty; see --force)")
    ap.add_argument("--release", type=Path,
                    help=f"the release folder the checkpoint was fine-tuned from (default: `release` of the "
                    f"{TRAIN_CONFIG} beside the checkpoint); its VAE and text encoders go beside the transformer")
    ap.add_argument("--resolution", choices=sorted(all_resolutions()),
                    help=f"which transformer folder to write (default: `release_resolution` of the {TRAIN_CONFIG}, "
                    "else the release folder's smallest)")
    ap.add_argument("--dtype", choices=DTYPES, default="release",
                    help="dtype of the written weights (default: as in the release's own file, weight by weight; "
                    "where that is bfloat16, float32 fine-tuned weights are rounded to it)")
    ap.add_argument("--link", choices=LINK_MODES, default="hardlink",
                    help="how the release's VAE and text-encoder folders are placed beside the transformer: hard "
                    "links (default; copies across file systems), symlinks to the release folder, or copies")
    ap.add_argument("--force", action="store_true",
                    help="write into a --to folder that is not empty (its transformer, VAE and text folders are "
                    "replaced)")
    return ap


def main(argv: list[str] | None = None) -> int:
    import torch

    args = _parser().parse_args(argv)
    ck = args.checkpoint
    if not (ck / "config.json").is_file():
        raise ConfigError(f"--checkpoint {ck}: no config.json (expected a folder written by save_pretrained, e.g. "
                          "results/<profile>/<experiment>/dit/<stage>/final)")
    try:
        cls = dit_class(json.loads((ck / "config.json").read_text()))
    except ValueError as e:
        raise ConfigError(f"--checkpoint {ck}: {e}") from None
    kind = release_of_class(cls)
    if kind is None:
        raise ConfigError(f"--checkpoint {ck}: a {cls.__name__} (the suite's own model) has no release layout to "
                          f"export to; export takes a model fine-tuned from a release "
                          f"({', '.join(k.model_class.__name__ for k in RELEASES.values())})")
    saved = read_train_config(ck / TRAIN_CONFIG) if (ck / TRAIN_CONFIG).is_file() else {}
    folder = args.release or saved.get("release")
    if not folder:
        raise ConfigError(f"--checkpoint {ck}: no release recorded (no `release` in {ck / TRAIN_CONFIG}); pass "
                          "--release <the release folder it was fine-tuned from>")
    if not Path(folder).is_dir():
        where = "--release" if args.release else f"`release` of {ck / TRAIN_CONFIG}"
        raise ConfigError(f"{where}: release folder {str(folder)!r} does not exist (pass --release <folder>)")
    rel = open_release(folder, "--release")
    if rel.kind is not kind:
        raise ConfigError(f"--checkpoint {ck} is a {cls.__name__} ({kind.label}) but {folder} is the "
                          f"{rel.kind.label}")
    resolution = (args.resolution or saved.get("release_resolution")
                  or (rel.resolutions() or list(rel.kind.resolutions))[0])
    dtype = None if args.dtype == "release" else getattr(torch, args.dtype)
    model = load_dit(ck)
    try:
        to = export_release(model, rel, resolution, args.to, dtype, args.link, args.force, source=str(ck))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"--checkpoint {ck}: {e.args[0] if e.args else e}") from None
    print(f"exported {ck} ({cls.__name__}) as the {kind.label} {resolution} layout to {to}: load it with "
          f"PyramidDiTForVideoGeneration({str(to)!r}, model_name={kind.pipeline_model_name!r}, "
          f"model_variant={rel.kind.resolutions[resolution].folder!r}) or `pyramid-repro sample --checkpoint {to}`")
    return 0
