"""One-command GPU check (about 3-5 minutes on one H100/H200): does the suite run on CUDA, and how fast is it?

    python benchmarks/gpu_check.py                 # everything below
    python benchmarks/gpu_check.py --only model    # the paper-size model checks only
    python benchmarks/gpu_check.py --only smoke    # the smoke workflow only
    python benchmarks/gpu_check.py --only memory   # measured peak memory of each paper stage vs the memory plan

1. smoke: the whole smoke workflow (snakemake, every job) on the GPU, the DiT and VAE under bf16 autocast;
   checks the exit code and that every ledger row names the GPU.
2. train_step: the paper's MM-DiT (2.06B parameters, random weights, bf16 autocast, AdamW) for a few training
   steps at the paper profile's stage-3 sequences (768p, 10 s: pyramid stage and frame drawn as the trainer draws
   them) and at 384p 5 s full sequence: seconds per step, tokens, TFLOP/s and MFU (analytic FLOPs of
   flow/cost.py over the GPU's dense bf16 peak).
3. generate: a 384p generation with the paper-size model (CFG, 20/20/20 Euler steps for the first latent frame and
   10/10/10 for later ones): pyramid with and without the history KV cache, and the 60-step full sequence.
4. memory (`--only memory`, also in the default run): for each curriculum stage of the paper profile's `pyramid`
   experiment at its planned setting, as far as one GPU goes (the memory plan for one process with the profile's
   micro-batch and activation checkpointing, or the largest micro-batch the plan fits on this GPU), a few
   training steps as the trainer takes them (fp32 weights, bf16 autocast, fused AdamW, EMA, gradient clipping) at
   the stage's worst draw: torch.cuda.max_memory_allocated beside the plan's figure (train/plan.py) and their
   ratio, and the model states actually allocated beside the plan's.

Prints one JSON line per figure (and writes them to --out/gpu_check.jsonl). Runs on the CPU too (--device cpu
--model smoke) so its code is tested without a GPU; the figures only mean something on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from pyramid_repro.config import load_config
from pyramid_repro.device import autocast, generator, resolve_device, synchronize
from pyramid_repro.generation.generate import TextCondition, generate_latents
from pyramid_repro.flow import PyramidSchedule, cost
from pyramid_repro.models import build_dit
from pyramid_repro.train.dit import flow_matching_loss
from pyramid_repro.train.ledger import read_ledgers
from pyramid_repro.train.loop import EMA, adamw
from pyramid_repro.train.plan import GB, dit_batch, plan_dit_stage, stage_plan, text_dims
from pyramid_repro.train.sequences import make_batch
from pyramid_repro.vae.model import build_vae

REPO = Path(__file__).resolve().parents[1]


def emit(record: dict, sink: list[dict]) -> None:
    print(json.dumps(record), flush=True)
    sink.append(record)


def peak_tflops(device: torch.device) -> float | None:
    """Dense bf16 tensor-core peak (TFLOP/s) of a CUDA device for MFU (flow/cost.py PEAK_BF16_FLOPS); None on
    other devices and GPUs (MFU null)."""
    if device.type != "cuda":
        return None
    peak = cost.peak_bf16_flops(torch.cuda.get_device_name(device))
    return peak / 1e12 if peak is not None else None


def smoke_workflow(out: Path, cores: int, sink: list[dict]) -> None:
    """The smoke workflow end to end through snakemake, the DiT and VAE in bf16 (autocast on CUDA)."""
    base = out / "smoke"
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--scheduler", "greedy", "--snakefile",
           str(REPO / "Snakefile"), "--config", "profile=smoke", f"results={base}/results", f"reports={base}/reports",
           "train={precision: bf16}", "vae={train: {precision: bf16}}", "--", f"{base}/reports/table1.pdf"]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    (out / "smoke_snakemake.log").write_text(r.stdout + r.stderr)
    import pandas as pd

    ledger = read_ledgers(f"{base}/results/smoke/**/ledger*.csv")
    done = [json.loads(p.read_text()) for p in sorted((base / "results" / "smoke").glob("*/dit/*/done.json"))]
    emit({"check": "smoke_workflow", "exit": r.returncode, "seconds": round(time.time() - t0, 1),
          "ledger_rows": len(ledger), "ledger_devices": sorted(set(map(str, ledger.get("device_name", pd.Series())))),
          "dit_stage_devices": sorted({d.get("device", "?") for d in done}),
          "tail": "" if r.returncode == 0 else (r.stdout + r.stderr)[-1500:]}, sink)


def _paper_cfg(experiment: str, model: str, height: int, width: int, frames: int):
    over = {"data": {"height": height, "width": width, "frames": frames}}
    if model == "smoke":  # CPU test of this script: a small model, small frames
        over["model"] = {"depth": 2, "hidden_size": 64, "num_heads": 2}
        over["data"] = {"height": 64, "width": 64, "frames": 17}
    return load_config("paper", over, experiment)


def _build(cfg, device: torch.device, text_dim: int, pooled_dim: int, randomise: bool = False):
    torch.manual_seed(0)
    with torch.device(device):
        model = build_dit(cfg, text_dim, pooled_dim)
    if randomise:  # adaLN-Zero starts at 0 velocity; random values so no kernel sees all-zero inputs
        with torch.no_grad():
            for p in model.parameters():
                if p.abs().sum() == 0:
                    p.normal_(std=0.02)
    return model


def train_steps(cfg, label: str, device: torch.device, steps: int, sink: list[dict]) -> None:
    """Seconds per optimizer step (micro-batch 1) on random latents of the profile's data size."""
    m, v = cfg.model, cfg.vae
    text_dim, pooled_dim, L = 4096, 2048, cfg.text_encoder.max_tokens
    H, W = cfg.data.height // v.spatial_compression, cfg.data.width // v.spatial_compression
    T = cost.latent_frames(cfg.data.frames, v.temporal_compression)
    model = _build(cfg, device, text_dim, pooled_dim).train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    sched = PyramidSchedule.from_config(cfg.pyramid)
    lat = torch.randn(1, v.latent_channels, T, H, W, device=device)
    tok = torch.randn(1, L, text_dim, device=device)
    mask = torch.ones(1, L, dtype=torch.bool, device=device)
    pooled = torch.randn(1, pooled_dim, device=device)
    g = generator(0, device)
    times, tokens, flops = [], [], []
    for i in range(steps + 2):  # two warm-up steps
        b = make_batch(lat, sched, cfg.pyramid, g)
        synchronize(device)
        t0 = time.perf_counter()
        _dit_step(model, opt, b, TextCondition(tok, mask, pooled), (H, W), device, "bf16")
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
            tokens.append(b.video_tokens(m.patch_size) + L)
            flops.append(cost.batch_training_flops(b.video_tokens(m.patch_size), 1, L, m))
    sec = sum(times) / len(times)
    tflops = sum(flops) / sum(times) / 1e12
    peak = peak_tflops(device)
    emit({"check": "train_step", "config": label, "params_billion": round(params / 1e9, 3), "micro_batch": 1,
          "seconds_per_step": round(sec, 4), "mean_tokens": round(sum(tokens) / len(tokens), 1),
          "tflops_per_s": round(tflops, 2), "mfu": round(tflops / peak, 4) if peak else None,
          "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda"
          else None}, sink)
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def generation(model_size: str, device: torch.device, frames: int, sink: list[dict]) -> None:
    """Seconds per 384p video of `frames` latent frames: pyramid (KV cache off/on) and the full sequence."""
    steps = {"steps_first_frame": [20, 20, 20], "steps_later_frames": [10, 10, 10], "guidance_first_frame": 7.0,
             "guidance_video": 5.0}
    results = {}
    for experiment, kv in (("pyramid", False), ("pyramid", True), ("fullseq", False)):
        cfg = _paper_cfg(experiment, model_size, 384, 640, 121)
        cfg.pyramid.sampler.steps_first_frame = steps["steps_first_frame"]
        cfg.pyramid.sampler.steps_later_frames = steps["steps_later_frames"]
        v, L = cfg.vae, cfg.text_encoder.max_tokens
        H, W = cfg.data.height // v.spatial_compression, cfg.data.width // v.spatial_compression
        model = _build(cfg, device, 4096, 2048, randomise=True).eval()
        text = TextCondition(torch.randn(1, L, 4096, device=device), torch.ones(1, L, dtype=torch.bool, device=device),
                             torch.randn(1, 2048, device=device))
        empty = TextCondition(torch.randn(1, L, 4096, device=device), torch.ones(1, L, dtype=torch.bool, device=device),
                              torch.randn(1, 2048, device=device))
        with autocast(device, "bf16"):
            generate_latents(model, cfg, text, empty, 1, (H, W), generator(0, device), kv_cache=kv)  # warm-up
            synchronize(device)
            t0 = time.perf_counter()
            lat = generate_latents(model, cfg, text, empty, frames, (H, W), generator(0, device), kv_cache=kv)
            synchronize(device)
        sec = time.perf_counter() - t0
        name = f"{experiment}{' + KV cache' if kv else ''}"
        results[name] = (sec, lat.float())
        emit({"check": "generate", "config": f"{cfg.data.height}p ({H}x{W} latent), {frames} latent frames, CFG",
              "method": name, "seconds": round(sec, 3), "seconds_per_frame": round(sec / frames, 3)}, sink)
        del model
    (tp, a), (tk, b), (tf, _) = results["pyramid"], results["pyramid + KV cache"], results["fullseq"]
    emit({"check": "generate_ratios", "pyramid_over_fullseq": round(tp / tf, 3),
          "kv_cache_speedup": round(tp / tk, 3), "kv_vs_uncached_max_abs_diff": float((a - b).abs().max())}, sink)


def _amp(device: torch.device, precision: str):
    return autocast(device, precision)


def _dit_step(model, opt, b, text: TextCondition, full_size: tuple[int, int], device: torch.device,
              precision: str) -> None:
    """One optimizer step of the MM-DiT on TrainBatch `b`: the trainer's forward + loss (train/dit.py
    flow_matching_loss) under autocast, backward, AdamW."""
    with _amp(device, precision):
        loss = flow_matching_loss(model, b, text, full_size)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _seconds_per_call(fn, device: torch.device, repeats: int) -> float:
    """Mean wall seconds of `fn()` over `repeats` calls after one warm-up, the device synchronised around each."""
    times = []
    for i in range(repeats + 1):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def _vae_step_seconds(cfg, device: torch.device, repeats: int) -> float:
    v, tc = cfg.vae, cfg.vae.train
    vae = build_vae(cfg).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    micro = tc.micro_batch_size or tc.batch_size
    x = torch.rand(micro, 3, v.train_frames or cfg.data.frames, cfg.data.height, cfg.data.width, device=device) * 2 - 1

    def step():
        with _amp(device, tc.precision):
            recon, _, _ = vae(x)
            loss = torch.nn.functional.mse_loss(recon.float(), x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _seconds_per_call(step, device, repeats) * max(1, tc.batch_size // micro)


def _dit_step_seconds(cfg, stage, device: torch.device, repeats: int) -> float:
    v, L = cfg.vae, cfg.text_encoder.max_tokens
    model = build_dit(cfg, 384, 384).to(device).train()  # MiniLM's text dimensions
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    h, w = stage.height // v.spatial_compression, stage.width // v.spatial_compression
    micro = stage.micro_batch_size or stage.batch_size
    lat = torch.randn(micro, v.latent_channels, cost.latent_frames(stage.frames, v.temporal_compression), h, w,
                      device=device)
    tok, mask = torch.randn(micro, L, 384, device=device), torch.ones(micro, L, dtype=torch.bool, device=device)
    pooled, g = torch.randn(micro, 384, device=device), generator(0, device)
    sched = PyramidSchedule.from_config(cfg.pyramid)

    def step():
        _dit_step(model, opt, make_batch(lat, sched, cfg.pyramid, g), TextCondition(tok, mask, pooled), (h, w),
                  device, cfg.train.precision)

    return _seconds_per_call(step, device, repeats) * max(1, stage.batch_size // micro)


def memory_steps(model_size: str, device: torch.device, steps: int, sink: list[dict]) -> None:
    """Peak memory of a few training steps of each paper stage (pyramid experiment) at its planned setting on one
    process, beside the memory plan's figure (train/plan.py): the check that the plan measures what a step holds."""
    over = None
    if model_size == "smoke":  # CPU test of this script: a small model, small frames
        over = {"model": {"depth": 2, "hidden_size": 64, "num_heads": 2},
                "train": {"curriculum": [
                    {"name": "image", "kind": "image", "height": 64, "width": 64, "frames": 1, "steps": 1,
                     "batch_size": 4, "micro_batch_size": 4},
                    {"name": "video_highres", "kind": "video", "height": 64, "width": 64, "frames": 17,
                     "steps": 1, "batch_size": 2, "micro_batch_tokens": 400}]}}
    cfg = load_config("paper", over, "pyramid")
    target = "cuda" if device.type == "cuda" else "cpu"
    memory = float(torch.cuda.get_device_properties(device).total_memory) if device.type == "cuda" else None
    D, P = text_dims(cfg)
    for st in cfg.train.curriculum:
        row = plan_dit_stage(cfg, "pyramid", st, 1, memory, target)
        plan = stage_plan(cfg, "pyramid", st, 1, target)
        micro = row.micro_batch if row.fits is not False else (row.max_micro_batch or 0)
        record = {"check": "memory", "stage": st.name, "device": str(device), "checkpointing": row.checkpointing,
                  "kernel": row.kernel, "planned_micro_batch": row.micro_batch, "micro_batch": micro,
                  "tokens": micro * plan.sample_tokens}
        if micro == 0:
            emit({**record, "error": f"the plan fits no micro-batch on this device ({row.total_gb} GB at "
                                     f"{row.micro_batch})"}, sink)
            continue
        planned = plan.total(micro, measure=True)
        planned_states = sum(plan.states().values()) - plan.states()["compute_copies"]
        torch.manual_seed(0)
        with torch.device(device):
            model = build_dit(cfg, D, P).train()
        # the trainer's own checkpointing (models.base.DiTModel.run_block), as train/dit.py switches it on
        model.set_activation_checkpointing(cfg.train.activation_checkpointing)
        opt = adamw(model.parameters(), device, lr=1e-4, betas=(0.9, 0.999))
        ema = EMA(model, cfg.train.ema_decay)
        b, text, full = dit_batch(cfg, st, micro, plan.draw, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        held = 0
        try:
            for _ in range(steps):
                with autocast(device, cfg.train.precision):
                    loss = flow_matching_loss(model, b, text, full)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                opt.step()
                held = _state_bytes(model, opt, ema)  # weights, gradients, AdamW state, EMA
                opt.zero_grad(set_to_none=True)
                ema.update(model)
        except torch.OutOfMemoryError as e:
            emit({**record, "plan_gb": round(planned / GB, 4), "error": f"out of memory: {str(e)[:200]}"}, sink)
        else:
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            emit({**record, "plan_gb": round(planned / GB, 4),
                  "measured_gb": None if peak is None else round(peak / GB, 4),
                  "ratio": None if peak is None else round(peak / planned, 3),
                  "plan_states_gb": round(planned_states / GB, 4), "measured_states_gb": round(held / GB, 4)}, sink)
        del model, opt, ema, b, text
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer, ema: EMA) -> int:
    """Bytes of the model states a training process holds at its optimizer step: weights, gradients, optimizer
    state, EMA."""
    tensors = list(model.parameters()) + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    tensors += list(ema.state_dict().values())
    seen, total = set(), 0
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def profile_cost(profile: str, device: torch.device, repeats: int, sink: list[dict]) -> None:
    """Measured seconds per optimizer step of the profile's VAE and of each DiT curriculum stage (the profile's
    batch sizes and precision, random data, pyramid experiment, MiniLM text dimensions) and the training hours
    they project to at the profile's step counts: the basis of the README's cost of a profile."""
    cfg = load_config(profile, None, "pyramid")
    sec = _vae_step_seconds(cfg, device, repeats)
    total = sec * cfg.vae.train.steps
    emit({"check": "profile_cost", "profile": profile, "job": "vae", "seconds_per_step": round(sec, 4),
          "steps": cfg.vae.train.steps, "hours": round(total / 3600, 3)}, sink)
    for st in cfg.train.curriculum:
        sec = _dit_step_seconds(cfg, st, device, repeats)
        total += sec * st.steps
        emit({"check": "profile_cost", "profile": profile, "job": f"dit {st.name} (pyramid)",
              "seconds_per_step": round(sec, 4), "steps": st.steps, "hours": round(sec * st.steps / 3600, 3)}, sink)
    emit({"check": "profile_cost", "profile": profile, "job": "vae + pyramid DiT curriculum",
          "hours": round(total / 3600, 3)}, sink)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["smoke", "model", "cost", "memory"],
                    help="run one part (default: smoke, model and memory)")
    ap.add_argument("--profile", default="small", help="--only cost: the profile whose step times are measured")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu (default auto)")
    ap.add_argument("--model", default="paper", choices=["paper", "smoke"],
                    help="paper: the 2B MM-DiT; smoke: a small one (CPU test of this script)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per config (after 2 warm-ups)")
    ap.add_argument("--frames", type=int, default=8, help="latent frames of the generated 384p video")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="snakemake --cores for the smoke workflow")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "gpu_check")
    args = ap.parse_args()
    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    sink: list[dict] = []
    emit({"check": "environment", "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
          "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
          "peak_bf16_tflops": peak_tflops(device)}, sink)
    if args.only in (None, "model"):
        for label, experiment, size in (("768p 10 s, pyramid (stage and frame drawn as in training)", "pyramid",
                                         (768, 1280, 241)),
                                        ("384p 5 s, full sequence", "fullseq", (384, 640, 121))):
            try:
                train_steps(_paper_cfg(experiment, args.model, *size), label, device, args.steps, sink)
            except torch.OutOfMemoryError as e:
                emit({"check": "train_step", "config": label, "error": f"out of memory: {str(e)[:200]}"}, sink)
                torch.cuda.empty_cache()
        generation(args.model, device, args.frames, sink)
    if args.only in (None, "memory"):
        memory_steps(args.model, device, min(args.steps, 3), sink)
    if args.only == "cost":
        profile_cost(args.profile, device, args.steps, sink)
    if args.only in (None, "smoke"):
        smoke_workflow(args.out, args.cores, sink)
    with (args.out / "gpu_check.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in sink)
    failed = [r for r in sink if r.get("exit", 0) != 0 or "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
