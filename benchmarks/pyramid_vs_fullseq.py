"""Side-by-side cost of pyramidal vs full-sequence flow matching, measured on this machine in one run.

(a) training cost per sample: video tokens, analytic FLOPs and measured forward+backward wall time, for the tiny
    profile's model and a larger CPU-feasible config;
(b) generation cost per video at the paper's step counts (pyramid: 20/20/20 first frame, 10/10/10 later frames;
    full sequence: 60 steps), tokens and wall time;
(c) the same pyramid generation with the history KV cache (history keys/values computed once per frame and
    stage instead of at every Euler step), checked against the uncached output.
Prints the ratios and writes reports/performance.md.

    python benchmarks/pyramid_vs_fullseq.py [--repeats 5] [--threads 2] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pyramid_repro.config import load_config
from pyramid_repro.device import generator, resolve_device, synchronize
from pyramid_repro.eval.generate import TextCondition, generate_latents
from pyramid_repro.flow import PyramidSchedule, cost
from pyramid_repro.models import build_dit
from pyramid_repro.train.sequences import make_batch

TEXT_DIM, TEXT_TOKENS = 384, 16


def _cfg(profile: str, experiment: str, model: dict | None = None, size: int | None = None, frames: int | None = None):
    over = {}
    if model:
        over["model"] = model
    if size:
        over["data"] = {"height": size, "width": size, "frames": frames}
    return load_config(profile, over, experiment)


def _text(B: int, device: torch.device) -> TextCondition:
    return TextCondition(torch.randn(B, TEXT_TOKENS, TEXT_DIM, device=device),
                         torch.ones(B, TEXT_TOKENS, dtype=torch.bool, device=device),
                         torch.randn(B, TEXT_DIM, device=device))


def train_cost(cfg, batch: int, repeats: int, device: torch.device) -> dict:
    """Mean tokens, analytic FLOPs and wall seconds per training sample over `repeats` random batches."""
    torch.manual_seed(0)
    model = build_dit(cfg, TEXT_DIM, TEXT_DIM).train().to(device)
    s = cfg.vae.spatial_compression
    H, W = cfg.data.height // s, cfg.data.width // s
    T = cost.latent_frames(cfg.data.frames, cfg.vae.temporal_compression)
    lat = torch.randn(batch, cfg.vae.latent_channels, T, H, W).to(device)
    sched = PyramidSchedule.from_config(cfg.pyramid)
    g = generator(0, device)
    text = _text(batch, device)
    toks = flops = secs = 0.0
    for i in range(repeats + 1):
        b = make_batch(lat, sched, cfg.pyramid, g)
        synchronize(device)
        t0 = time.perf_counter()
        v = model(history=b.history, current=b.current, timestep=b.timestep, tokens=text.tokens,
                  text_mask=text.mask, pooled=text.pooled, full_size=(H, W))
        torch.nn.functional.mse_loss(v, b.target).backward()
        synchronize(device)
        dt = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        if i == 0:
            continue  # warm-up
        n = b.video_tokens(cfg.model.patch_size) / batch
        toks += n
        flops += cost.training_flops(n + TEXT_TOKENS, cfg.model.depth, cfg.model.hidden_size, cfg.model.mlp_ratio)
        secs += dt / batch
    return {"tokens": toks / repeats, "flops": flops / repeats, "seconds": secs / repeats}


def generation(cfg, kv_cache: bool, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, float]:
    torch.manual_seed(0)
    model = build_dit(cfg, TEXT_DIM, TEXT_DIM).eval()
    for p in model.parameters():  # adaLN-Zero init predicts 0: randomise so the comparison is not trivial
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.02)
    model.to(device)
    s = cfg.vae.spatial_compression
    H, W = cfg.data.height // s, cfg.data.width // s
    T = cost.latent_frames(cfg.data.frames, cfg.vae.temporal_compression)
    text, empty = _text(1, device), _text(1, device)
    synchronize(device)
    t0 = time.perf_counter()
    out = generate_latents(model, cfg, text, empty, T, (H, W), generator(seed, device), kv_cache=kv_cache)
    synchronize(device)
    return out.cpu(), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("reports/performance.md"))
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} CPU threads"
    lines = ["# Pyramid vs full sequence, measured side by side", "",
             f"torch {torch.__version__}, {where}, fp32; analytic FLOPs from flow/cost.py", ""]

    lines += ["## (a) training cost per sample", "",
              "| config | tokens pyr/full | analytic FLOPs pyr/full | measured time pyr/full | within 25% |",
              "|---|---|---|---|---|"]
    configs = {"tiny (h128 d4, 8x8x5 latent)": ("tiny", None, None, None, 16),
               "larger (h256 d6, 16x16x9 latent)": ("tiny", {"depth": 6, "hidden_size": 256, "num_heads": 4},
                                                    64, 33, 8)}
    for name, (prof, model, size, frames, batch) in configs.items():
        p = train_cost(_cfg(prof, "pyramid", model, size, frames), batch, args.repeats, device)
        f = train_cost(_cfg(prof, "fullseq", model, size, frames), batch, args.repeats, device)
        rt, rf, rs = p["tokens"] / f["tokens"], p["flops"] / f["flops"], p["seconds"] / f["seconds"]
        ok = abs(rs / rf - 1) <= 0.25
        print(f"[train] {name}: tokens {rt:.3f}  FLOPs {rf:.3f}  wall {rs:.3f}  (wall/FLOP ratio {rs / rf:.2f})")
        lines.append(f"| {name} | {rt:.3f} | {rf:.3f} | {rs:.3f} | {'yes' if ok else 'no'} ({rs / rf:.2f}) |")

    steps = {"steps_first_frame": [20, 20, 20], "steps_later_frames": [10, 10, 10]}
    gen_cfg = lambda e: load_config("tiny", {"pyramid": {"sampler": steps}}, e)  # noqa: E731
    pyr, tp = generation(gen_cfg("pyramid"), False, device)
    pyr_kv, tk = generation(gen_cfg("pyramid"), True, device)
    _, tf = generation(gen_cfg("fullseq"), False, device)
    c = gen_cfg("pyramid")
    s = c.vae.spatial_compression
    H, W, T = c.data.height // s, c.data.width // s, cost.latent_frames(c.data.frames, c.vae.temporal_compression)
    ana_p = cost.pyramid_generation_cost(H, W, 1, T, 3, steps["steps_first_frame"], steps["steps_later_frames"])
    ana_k = cost.pyramid_generation_cost(H, W, 1, T, 3, steps["steps_first_frame"], steps["steps_later_frames"],
                                         kv_cache=True)
    ana_f = cost.fullseq_generation_cost(H, W, 1, T, 60)
    err = float((pyr - pyr_kv).abs().max())
    print(f"[generate] pyramid/fullseq wall {tp / tf:.3f} (tokens {ana_p.tokens / ana_f.tokens:.3f}); "
          f"KV cache speed-up {tp / tk:.2f}x (tokens {ana_p.tokens / ana_k.tokens:.2f}x), max abs error {err:.2e}")
    lines += ["", "## (b) generation per video (tiny model, paper step counts 20/10 per stage vs 60)", "",
              "| | wall seconds | tokens processed |", "|---|---|---|",
              f"| full sequence | {tf:.2f} | {ana_f.tokens:,} |", f"| pyramid | {tp:.2f} | {ana_p.tokens:,} |",
              f"| pyramid + history KV cache | {tk:.2f} | {ana_k.tokens:,} |", "",
              f"pyramid / full sequence: wall {tp / tf:.3f}, tokens {ana_p.tokens / ana_f.tokens:.3f}", "",
              "## (c) history KV cache", "",
              f"speed-up {tp / tk:.2f}x (token ratio {ana_p.tokens / ana_k.tokens:.2f}x); max abs difference to the "
              f"uncached latents {err:.2e}"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
