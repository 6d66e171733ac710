"""`pyramid-repro eval-vae`: PSNR and SSIM of a VAE on held-out clips, and a reconstruction grid
(vae/evaluate.py does the work)."""

from __future__ import annotations

from pathlib import Path

from pyramid_repro.cliutil import add_threads_arg, config_from_args, config_parser
from pyramid_repro.vae.evaluate import evaluate


def main(argv: list[str] | None = None) -> int:
    ap = config_parser("eval-vae",
                       "PSNR/SSIM of the trained VAE on held-out (test split) clips -> "
                       "results/<profile>/vae/eval.json + reconstructions.png")
    ap.add_argument("--vae", type=Path, help="VAE folder to evaluate instead of the profile's trained one: the "
                    "suite's own (train-vae's final/) or the authors' released causal_video_vae/")
    ap.add_argument("--out", type=Path, help="folder for eval.json and reconstructions.png (default: layout.vae, or "
                    "layout.vae/eval_<name of --vae folder> for another VAE)")
    add_threads_arg(ap)
    args = ap.parse_args(argv)
    r = evaluate(config_from_args(args), args.out, args.vae)
    shape = "x".join(map(str, r["clip_shape"]))
    print(f"{r['vae_kind']} VAE {r['vae_folder']} on {r['n_clips']} held-out clips ({shape}, T x H x W): "
          f"PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}")
    return 0
