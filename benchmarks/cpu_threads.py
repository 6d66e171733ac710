"""Training throughput of the tiny DiT on the CPU under the ways a workflow can share the cores, side by side.

Each case runs the same training step (forward, backward, AdamW; a high-res video-stage batch with its
temporal-pyramid history, as dit_step_time.py builds it) in separate processes for a fixed time and reports the
steps per second of all processes together, as a ratio to one process using every core:

    alone       one process, --threads = cores (how the workflow runs a job today)
    1 thread    one process, one thread
    N x 1       one single-thread process per core, side by side (job-level parallelism)
    N x cores   one process per core, each with --threads = cores (oversubscribed), OpenMP threads spinning while
                they wait (libgomp's default)
    ... passive the same with OMP_WAIT_POLICY=PASSIVE (waiting threads sleep)

    python benchmarks/cpu_threads.py [--profile tiny] [--seconds 20] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time, torch
threads, seconds, profile, batch = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
from pyramid_repro.config import load_config
from pyramid_repro.flow import build_history, pyramid_latents
from pyramid_repro.models import build_dit
cfg = load_config(profile)
from pyramid_repro.flow.cost import latent_frames
s, K = cfg.vae.spatial_compression, cfg.pyramid.stages
H, W = cfg.data.height // s, cfg.data.width // s
T = latent_frames(cfg.data.frames, cfg.vae.temporal_compression)
model = build_dit(cfg, 384, 384).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
clip = torch.randn(batch, cfg.vae.latent_channels, T, H, W)
k = K - 1  # the last pyramid stage of the last frame: the longest training sequence of the high-res stage
history = [hf.latent for hf in build_history(clip[:, :, :-1], k, K, cfg.pyramid.temporal_pyramid)]
cur = pyramid_latents(clip[:, :, -1], K)[k].unsqueeze(2)
t = torch.rand(batch) * 1000
L = cfg.text_encoder.max_tokens
tok, mask, pooled = torch.randn(batch, L, 384), torch.ones(batch, L, dtype=torch.bool), torch.randn(batch, 384)
def step():
    out = model(history, cur, t, tok, mask, pooled, (H, W))
    out.square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
for _ in range(3):
    step()
print("ready", flush=True)
sys.stdin.readline()  # start together
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    step()
    n += 1
print(json.dumps({"steps": n, "seconds": time.perf_counter() - t0}), flush=True)
"""


def run_case(processes: int, threads: int, seconds: float, profile: str, batch: int, passive: bool) -> float:
    """Steps per second of `processes` concurrent workers with `threads` threads each."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(threads), str(seconds), profile, str(batch)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(processes)]
    for p in procs:  # every worker warmed up before the clock starts
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    rates = []
    for p in procs:
        out = json.loads(p.stdout.readline())
        p.wait()
        rates.append(out["steps"] / out["seconds"])
    return sum(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time per case")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    n = args.cores
    cases = [("alone", 1, n, False), ("1 thread", 1, 1, False), (f"{n} x 1", n, 1, False),
             (f"{n} x {n}", n, n, False), (f"{n} x {n} passive", n, n, True), ("alone passive", 1, n, True)]
    base = None
    print(f"profile {args.profile}, high-res video stage, batch {args.batch}, {n} cores, {args.seconds:.0f} s per case")
    for name, procs, threads, passive in cases:
        t0 = time.time()
        rate = run_case(procs, threads, args.seconds, args.profile, args.batch, passive)
        base = base or rate
        print(json.dumps({"case": name, "processes": procs, "threads": threads, "omp_wait_policy":
                          "PASSIVE" if passive else "default", "steps_per_s": round(rate, 3),
                          "throughput_vs_alone": round(rate / base, 3), "wall_s": round(time.time() - t0, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
