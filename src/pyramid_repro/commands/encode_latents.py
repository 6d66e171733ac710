"""`pyramid-repro encode-latents`: encode the dataset once per curriculum stage into the normalised latent cache
(vae/cache.py does the work)."""

from __future__ import annotations

from pathlib import Path

from pyramid_repro.cliutil import add_threads_arg, config_from_args, config_parser
from pyramid_repro.device import config_device
from pyramid_repro.releases import vae_for
from pyramid_repro.vae.cache import encode_stage


def main(argv: list[str] | None = None) -> int:
    ap = config_parser("encode-latents",
                       "Encode the dataset once per curriculum stage into normalised latents "
                       "(results/<profile>/latents/<stage>/ shards + index.json).")
    ap.add_argument("--stage", action="append", help="only these stages (default: every curriculum stage)")
    ap.add_argument("--out", type=Path, help="latent cache folder, one sub-folder per stage (default: layout.latents)")
    add_threads_arg(ap)
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    vae = vae_for(cfg, cfg.vae.encode_chunk_frames, config_device(cfg))
    out = args.out or cfg.layout.latents()
    for st in cfg.train.curriculum:
        if args.stage and st.name not in args.stage:
            continue
        print(f"wrote {encode_stage(cfg, vae, st, out / st.name)}")
    return 0
