"""Side-by-side cost of pyramidal vs full-sequence flow matching, measured on this machine in one run.

(a) training cost per sample: video tokens, analytic FLOPs and measured forward+backward wall time, for the tiny
    profile's model and a larger CPU-feasible config;
(b) generation cost per video at the paper's step counts (pyramid: 20/20/20 first frame, 10/10/10 later frames;
    full sequence: 60 steps), tokens and wall time;
(c) the same pyramid generation with the history KV cache (history keys/values computed once per frame and
    stage instead of at every Euler step), checked against the uncached output; on CUDA also the KV cache with
    each (frame, stage)'s Euler step captured as a CUDA graph and replayed (generation/capture.py), checked the
    same way;
(d) one attention layer (forward + backward; forward only on the CPU) at the longest training sequence of a
    profile's last video stage (pyramid: the last latent frame at the finest stage after its compressed history;
    full sequence: every frame at full resolution): dense-mask SDPA (the reference and CPU path), SDPA without a
    mask (a lower bound for a dense kernel) and FlexAttention's block mask (models/attention.py; compiled on CUDA,
    an uncompiled reference on the CPU), with the largest difference of the flex output to the dense one.
    On a GPU the default is the paper-size layer (24 heads x 64) at 384p 5 s.
(e) on a GPU only: whole training steps (forward, backward, AdamW) of the paper's 2B MM-DiT at 384p 5 s in bf16,
    per sample: the full sequence at micro-batch 1 (15,488 tokens) and the pyramid with token-packed micro-batches
    under the same token budget (train/dit.py packed_size), so both use the same memory; model FLOPs utilisation
    against the GPU's dense bf16 peak (`--budget`, `--train-steps`).
Prints the ratios and writes reports/performance.md.

    python benchmarks/pyramid_vs_fullseq.py [--repeats 5] [--threads 2] [--device auto|cpu|cuda]
                                            [--attention-profile tiny|paper] [--budget 15488] [--train-steps 12]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pyramid_repro.config import load_config
from pyramid_repro.device import autocast, generator, resolve_device, synchronize
from pyramid_repro.generation.generate import TextCondition, generate_latents
from pyramid_repro.flow import PyramidSchedule, cost
from pyramid_repro.flow.temporal import build_history
from pyramid_repro.models import build_dit
from pyramid_repro.models.attention import MaskSpec, attend, flex_attention
from pyramid_repro.train.dit import flow_matching_loss, packed_size
from pyramid_repro.train.loop import adamw
from pyramid_repro.train.sequences import draw_stage_frame, make_batch

TEXT_DIM, TEXT_TOKENS = 384, 16
# dense bf16 peak (FLOP/s) of a GPU by its name, None for a GPU without a stated peak (FLOP/s without an MFU)
device_peak = cost.peak_bf16_flops


def train_steps(cfg, device: torch.device, steps: int, budget: int, size: tuple[int, int, int],
                text: tuple[int, int, int] = (TEXT_TOKENS, TEXT_DIM, TEXT_DIM)) -> dict:
    """Whole training steps as train-dit runs them (bf16 autocast on CUDA, AdamW), timed per sample after one
    warm-up step. Each step is one micro-batch: the full sequence takes max(1, budget // its length) samples, the
    pyramid draws (stage, frame) and packs `packed_size` samples of that length into the same budget."""
    torch.manual_seed(0)
    L, D, P = text
    model = build_dit(cfg, D, P).train().to(device)
    opt = adamw(model.parameters(), device, lr=1e-5)
    s = cfg.vae.spatial_compression
    H, W = size[0] // s, size[1] // s
    T = cost.latent_frames(size[2], cfg.vae.temporal_compression)
    sched = PyramidSchedule.from_config(cfg.pyramid)
    g = generator(0, device)
    m = cfg.model
    samples = toks = flops = secs = 0.0
    for i in range(steps + 1):
        draw = draw_stage_frame(T, sched, cfg.pyramid, g)
        n = packed_size(cost.draw_video_tokens(draw, T, H, W, m.patch_size, cfg.pyramid), budget, 64)
        lat = torch.randn(n, cfg.vae.latent_channels, T, H, W, device=device)
        b = make_batch(lat, sched, cfg.pyramid, g, draw)
        tokens, mask = torch.randn(n, L, D, device=device), torch.ones(n, L, dtype=torch.bool, device=device)
        text = TextCondition(tokens, mask, torch.randn(n, P, device=device))
        synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, "bf16"):
            loss = flow_matching_loss(model, b, text, (H, W))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(device)
        dt = time.perf_counter() - t0
        if i == 0:
            continue  # warm-up (allocator, kernels)
        vt = b.video_tokens(m.patch_size) / n
        samples += n
        toks += n * (vt + L)
        flops += cost.batch_training_flops(b.video_tokens(m.patch_size), n, L, m)
        secs += dt
    out = {"seconds_per_sample": secs / samples, "samples_per_step": samples / steps, "tokens_per_second": toks / secs,
           "flops_per_second": flops / secs, "flops_per_sample": flops / samples}
    peak = device_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    out["mfu"] = out["flops_per_second"] / peak if peak else None
    return out


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
        flow_matching_loss(model, b, text, (H, W)).backward()
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


def generation(cfg, kv_cache: bool, device: torch.device, seed: int = 0,
               capture: str = "none") -> tuple[torch.Tensor, float]:
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
    out = generate_latents(model, cfg, text, empty, T, (H, W), generator(seed, device), kv_cache=kv_cache,
                           capture=capture)
    synchronize(device)
    return out.cpu(), time.perf_counter() - t0


def attention_layout(cfg, size: tuple[int, int, int] | None = None) -> tuple[torch.Tensor, int]:
    """Frame index of every video token and the text length of the longest training sequence of a video stage
    (height, width, pixel frames; default the profile's last curriculum stage): the last latent frame at the
    finest pyramid stage after its compressed history."""
    st, p, K = cfg.train.curriculum[-1], cfg.model.patch_size, cfg.pyramid.stages
    height, width, n_frames = size or (st.height, st.width, st.frames)
    s = cfg.vae.spatial_compression
    H, W = height // s, width // s
    T = cost.latent_frames(n_frames, cfg.vae.temporal_compression)
    hist = build_history(torch.zeros(1, 1, T - 1, H, W), K - 1, K, cfg.pyramid.temporal_pyramid)
    sizes = [hf.latent.shape[-2] // p * (hf.latent.shape[-1] // p) for hf in hist] + [H // p * (W // p)]
    frames = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    return frames, cfg.text_encoder.max_tokens


def attention_kernels(cfg, device: torch.device, repeats: int, size: tuple[int, int, int] | None = None) -> dict:
    """Seconds of one attention layer's forward + backward (forward only on the CPU) under each kernel, and
    flex's max abs difference to the dense mask."""
    frames, L = attention_layout(cfg, size)
    frames = frames.to(device)
    heads, hd = cfg.model.num_heads, cfg.model.hidden_size // cfg.model.num_heads
    spec = MaskSpec(frames, torch.ones(1, L, dtype=torch.bool, device=device), True, L + len(frames))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = generator(0, device)
    backward = device.type == "cuda"  # FlexAttention has no CPU backward: the CPU times forward passes only
    q, k, v = (torch.randn(1, heads, spec.n_keys, hd, generator=g, device=device, dtype=dtype).requires_grad_(backward)
               for _ in range(3))
    dense = spec.dense()
    masks = {"sdpa, dense mask": dense, "sdpa, no mask": None}
    if flex_attention is not None:
        masks["flex, block mask" + ("" if device.type == "cuda" else " (uncompiled reference)")] = spec.build("flex")
    out: dict = {"tokens": spec.n_keys, "density": float(dense.float().mean()), "backward": backward}
    outputs = {}
    for name, mask in masks.items():
        secs = 0.0
        for i in range(repeats + 2):  # two warm-ups: the first flex call on CUDA compiles
            synchronize(device)
            t0 = time.perf_counter()
            o = attend(q, k, v, mask)
            if backward:
                o.float().square().mean().backward()
            synchronize(device)
            if i >= 2:
                secs += time.perf_counter() - t0
        out[name] = secs / repeats
        outputs[name] = o.detach().float()
        q.grad = k.grad = v.grad = None
    flex_name = next((n for n in masks if n.startswith("flex")), None)
    if flex_name:
        out["flex max abs diff"] = float((outputs[flex_name] - outputs["sdpa, dense mask"]).abs().max())
    return out


def paper_training_section(device: torch.device, steps: int, budget: int, where: str,
                           profile: str = "paper", size: tuple[int, int, int] = (384, 640, 121),
                           results: dict | None = None) -> list[str]:
    """(e): the paper's MM-DiT (T5 4096 / CLIP 2048 text dims, 128 text tokens) trained per sample, pyramid vs
    full sequence under one token budget. `results`, when given, receives each experiment's figures (the audit
    reads them from performance.json)."""
    res = {}
    for e in ("fullseq", "pyramid"):
        cfg = load_config(profile, None, e)
        res[e] = train_steps(cfg, device, steps, budget - cfg.text_encoder.max_tokens, size,
                             (cfg.text_encoder.max_tokens, 4096, 2048))
    if results is not None:
        results.update(res)
    f, p = res["fullseq"], res["pyramid"]
    wall, fl = p["seconds_per_sample"] / f["seconds_per_sample"], p["flops_per_sample"] / f["flops_per_sample"]
    lines = ["", f"## (e) paper-size training per sample ({where}, bf16, {size[1]}x{size[0]} {size[2]} frames, "
             f"token budget {budget:,} per micro-batch)", "",
             "| | samples per micro-batch | s per sample | tokens/s | TFLOP/s | MFU |", "|---|---|---|---|---|---|"]
    for e, r in res.items():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (peak unknown)"
        print(f"[paper train] {e}: {r['samples_per_step']:.1f} samples/micro-batch, {r['seconds_per_sample']:.3f} "
              f"s/sample, {r['flops_per_second'] / 1e12:.1f} TFLOP/s, MFU {mfu}")
        lines.append(f"| {e} | {r['samples_per_step']:.1f} | {r['seconds_per_sample']:.3f} | "
                     f"{r['tokens_per_second']:,.0f} | {r['flops_per_second'] / 1e12:.1f} | {mfu} |")
    print(f"[paper train] pyramid / full sequence: wall {wall:.3f}, FLOPs {fl:.3f} (wall / FLOP share {wall / fl:.2f})")
    lines += ["", f"pyramid / full sequence per sample: wall {wall:.3f} against FLOPs {fl:.3f} "
              f"(wall / FLOP share {wall / fl:.2f}; the goal is at most 1.5)"]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("reports/performance.md"))
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA when available)")
    ap.add_argument("--budget", type=int, default=15488, help="(e) video + text tokens per micro-batch (default: "
                    "the 384p 5 s full sequence, 15,488)")
    ap.add_argument("--train-steps", type=int, default=12, help="(e) timed training steps per experiment")
    ap.add_argument("--attention-profile", default=None, choices=["tiny", "paper"],
                    help="whose last-stage sequence and layer size section (d) times (default: paper on CUDA, "
                         "tiny on the CPU)")
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
    if device.type == "cuda":  # each (frame, stage)'s Euler step captured once and replayed (generation/capture.py)
        pyr_g, tg = generation(gen_cfg("pyramid"), True, device, capture="cuda-graph")
        err_g = float((pyr - pyr_g).abs().max())
        print(f"[generate] KV cache + CUDA graphs {tg:.2f} s: speed-up {tp / tg:.2f}x over uncached, {tk / tg:.2f}x "
              f"over the KV cache alone, max abs error {err_g:.2e}")
        lines += ["", f"KV cache + CUDA graphs: {tg:.2f} s, speed-up {tp / tg:.2f}x ({tk / tg:.2f}x over the KV cache "
                  f"alone); max abs difference to the uncached latents {err_g:.2e}"]
    else:
        print("[generate] KV cache + CUDA graphs: CUDA only, not measured on this device (--device cuda)")
        lines += ["", "KV cache + CUDA graphs: CUDA only, not measured on this device "
                  "(`python benchmarks/pyramid_vs_fullseq.py --device cuda`)"]

    att_profile = args.attention_profile or ("paper" if device.type == "cuda" else "tiny")
    # paper: the 384p 5 s stage 3 (640x384, 121 frames = 16 latent frames), where a GPU can still hold the mask
    size = (384, 640, 121) if att_profile == "paper" else None
    for experiment in ("pyramid", "fullseq"):
        acfg = load_config(att_profile, None, experiment)
        att = attention_kernels(acfg, device, args.repeats, size)
        dense = att["sdpa, dense mask"]
        passes = "forward + backward" if att["backward"] else "forward"
        lines += ["", f"## (d) attention kernels: one layer {passes}, {experiment} ({att_profile} profile, "
                  f"{acfg.model.num_heads} heads x {acfg.model.hidden_size // acfg.model.num_heads}, "
                  f"{att['tokens']:,} tokens, mask density {att['density']:.2f})", "",
                  "| kernel | ms | speed vs dense mask |", "|---|---|---|"]
        for name, sec in att.items():
            if name.startswith(("sdpa", "flex,")):
                print(f"[attention] {experiment} {att['tokens']} tokens, {name}: {sec * 1e3:.2f} ms "
                      f"({dense / sec:.2f}x)")
                lines.append(f"| {name} | {sec * 1e3:.2f} | {dense / sec:.2f}x |")
        if "flex max abs diff" in att:
            print(f"[attention] {experiment}: flex vs dense max abs difference {att['flex max abs diff']:.2e}")
            lines += ["", f"FlexAttention vs dense mask: max abs difference {att['flex max abs diff']:.2e}"]
    paper_training: dict = {}
    if device.type == "cuda":
        lines += paper_training_section(device, args.train_steps, args.budget, where, results=paper_training)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    # the GPU-hour audit sets section (e)'s MFU beside the paper's implied utilisation (report/audit.py)
    args.out.with_suffix(".json").write_text(json.dumps({"device": where, "paper_training": paper_training},
                                                        indent=1) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
