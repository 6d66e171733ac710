"""`pyramid-repro launch`: run a pyramid-repro command with its data-parallel processes, on one node or (under
srun, one copy per node) on several (launch.py holds the rendezvous and the accelerate command line)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from pyramid_repro.launch import accelerate_command, rendezvous


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="pyramid-repro launch",
        description="Run a pyramid-repro command with data-parallel processes: on one node, or (under srun, one "
                    "copy per node) on several. The workflow's training rules call it; see docs/design.md §7.",
        epilog="example: pyramid-repro launch --nodes 1 --processes-per-node 2 -- train-dit --profile smoke "
               "--experiment pyramid --stage image --out results/smoke/pyramid/dit/image")
    p.add_argument("--nodes", type=int, default=1, help="machines the job spans (default 1)")
    p.add_argument("--processes-per-node", type=int, default=1,
                   help="training processes on each machine (one per GPU; default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the accelerate command line instead of running it")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the pyramid-repro command and its options, after --")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given: pyramid-repro launch [options] -- <command> [its options]")
    if args.nodes < 1 or args.processes_per_node < 1:
        p.error("--nodes and --processes-per-node must be at least 1")
    if args.nodes * args.processes_per_node == 1:
        cmd = [sys.executable, "-m", "pyramid_repro.cli", *command]
    else:
        try:
            rank, ip, port = rendezvous(args.nodes, os.environ)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 2
        cmd = accelerate_command(command, args.nodes, args.processes_per_node, rank, ip, port)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    return subprocess.call(cmd)
