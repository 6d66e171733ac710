"""Forward+backward time per token of the MM-DiT at each pyramid stage, tiny profile by default.

One training-shaped call per stage: a single current latent frame at the stage resolution with the temporal-pyramid
history of the last frame of a clip (as the trainer builds it), text tokens included.

    python benchmarks/dit_step_time.py [--profile tiny] [--batch 16] [--repeats 5] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from pyramid_repro.config import load_config
from pyramid_repro.device import resolve_device, synchronize
from pyramid_repro.flow import build_history, pyramid_latents
from pyramid_repro.flow.cost import latent_frames
from pyramid_repro.models import build_dit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    cfg = load_config(args.profile)
    s, K, p = cfg.vae.spatial_compression, cfg.pyramid.stages, cfg.model.patch_size
    H, W = cfg.data.height // s, cfg.data.width // s
    T = latent_frames(cfg.data.frames, cfg.vae.temporal_compression)
    D, L, B = 384, cfg.text_encoder.max_tokens, args.batch
    model = build_dit(cfg, D, D).train().to(dev)
    clip = torch.randn(B, cfg.vae.latent_channels, T, H, W, device=dev)
    text = (torch.randn(B, L, D, device=dev), torch.ones(B, L, dtype=torch.bool, device=dev),
            torch.randn(B, D, device=dev))
    print(f"profile {args.profile}: latent {H}x{W}x{T}, batch {B}, on {dev} ({args.threads} CPU threads)")
    print("stage  resolution  tokens/sample  ms/step  us/token")
    for k in range(K):
        hist = [h.latent for h in build_history(clip[:, :, :-1], k, K, cfg.pyramid.temporal_pyramid)]
        cur = pyramid_latents(clip[:, :, -1], K)[k].unsqueeze(2)
        tokens = (sum(h.shape[-2] * h.shape[-1] for h in hist) + cur.shape[-2] * cur.shape[-1]) // p**2 + L
        times = []
        for i in range(args.repeats + 1):
            synchronize(dev)
            t0 = time.perf_counter()
            v = model(history=hist, current=cur, timestep=torch.full((B,), 500.0, device=dev), tokens=text[0],
                      text_mask=text[1], pooled=text[2], full_size=(H, W))
            v.pow(2).mean().backward()
            model.zero_grad(set_to_none=True)
            synchronize(dev)
            if i:
                times.append(time.perf_counter() - t0)
        ms = 1000 * sum(times) / len(times)
        us = 1000 * ms / (tokens * B)
        print(f"{k:>5}  {cur.shape[-2]:>4}x{cur.shape[-1]:<5}  {tokens:>13}  {ms:>7.1f}  {us:>8.2f}")


if __name__ == "__main__":
    main()
