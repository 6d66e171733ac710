"""`pyramid-repro plan`: the memory plan of a profile's training jobs (train/plan.py, docs/design.md §8).

Per experiment and curriculum stage (and the VAE), per GPU: model states after sharding (weights, gradients,
optimizer state, EMA, bf16 copies), activations at the stage's worst draw and micro-batch with and without the
configured checkpointing (measured on the meta device), the total, whether it fits the GPU's memory and the
largest micro-batch that would.
"""

from __future__ import annotations

import argparse
import json

from pyramid_repro.cliutil import add_config_args, config_from_args
from pyramid_repro.train.plan import GB, PlanRow, default_target, device_memory, job_processes, plan_profile


def _print(rows: list[PlanRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("experiment", "stage", "micro-batch", "tokens", "states GB", "activations GB",
                "(no ckpt)", "total GB", "fits", "max micro-batch"):
        t.add_column(col, justify="left" if col in ("experiment", "stage", "fits") else "right")
    for r in rows:
        fits = "?" if r.fits is None else ("fits" if r.fits else "does not fit")
        t.add_row(r.experiment, r.stage, str(r.micro_batch), f"{r.tokens:,}", f"{r.states_gb:.1f}",
                  f"{r.activations_gb:.1f}", f"{r.activations_no_ckpt_gb:.1f}", f"{r.total_gb:.1f}", fits,
                  "-" if r.max_micro_batch is None else str(r.max_micro_batch))
    Console(width=160).print(t)
    for r in rows:
        said = [r.note] if r.note else []
        if r.fits is False and r.suggestion:
            said.append(f"fits with {r.suggestion}")
        if said:
            print(f"{r.experiment}/{r.stage}: {'; '.join(said)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyramid-repro plan",
        description="Memory per GPU of every training job of a profile (each experiment's curriculum stages and "
        "the VAE), measured on the meta device before anything runs: states after sharding, activations at each "
        "stage's worst draw (with and without activation checkpointing), total, fits or not, largest micro-batch "
        "that fits (at most the global batch). Example: pyramid-repro plan --profile paper --gpu-memory 80 "
        "--processes 128",
    )
    add_config_args(ap)
    ap.add_argument("--gpu-memory", type=float, help="memory per GPU in GB (10^9 bytes); default: "
                    "compute.gpu_memory_gb, else this machine's CUDA device, else no verdict")
    ap.add_argument("--processes", type=int, help="training processes (GPUs) of a DiT job; default: the profile's "
                    "compute.nodes x processes per node (the VAE job runs on one node)")
    ap.add_argument("--device", choices=["cuda", "cpu"], help="the device type the jobs train on (default: cuda "
                    "for a GPU profile or on a machine with a GPU, else cpu)")
    ap.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    target = args.device or default_target(cfg)
    if args.gpu_memory is not None:
        memory = args.gpu_memory * GB
    else:
        memory = device_memory(cfg, "cuda" if target == "cuda" and _cuda() else None)
    processes = args.processes or job_processes(cfg)
    experiments = [args.experiment] if args.experiment else None
    rows = plan_profile(cfg, experiments, processes, memory, target)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=1))
        return 0
    mem = "no memory to check against" if memory is None else f"{memory / GB:g} GB per GPU"
    _print(rows, f"Memory plan, profile '{cfg.profile}', {processes} process(es), {target}, {mem}, sharding "
                 f"{cfg.compute.sharding}, checkpointing {cfg.train.activation_checkpointing:g}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
