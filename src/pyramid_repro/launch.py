"""`pyramid-repro launch`: start a training command with its data-parallel processes (docs/design.md §7).

    pyramid-repro launch --nodes N --processes-per-node P -- train-dit --profile paper ...

One process on one node runs the command directly. Several processes on one node run `accelerate launch` with a
free rendezvous port on this machine. Several nodes: the workflow starts this command once per node under SLURM's
`srun` (one task per node), and each copy runs `accelerate launch` with its machine rank (SLURM_NODEID), the main
process's address (the first host of the step's node list) and a port every node derives from the job id, which is
what accelerate (torch.distributed's static rendezvous) expects of a multi-machine launch. The workflow builds these
command lines with `launch_prefix`; the rule's shell is the only place that calls them.

Its command line (options, messages) is commands/launch.py.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping

PORT_BASE, PORT_SPAN = 20000, 20000  # multi-node rendezvous ports: PORT_BASE + job id mod PORT_SPAN


def launch_prefix(nodes: int, processes_per_node: int, cpus_per_node: int, gpus_per_node: int = 0) -> str:
    """The words a workflow rule puts before a `pyramid-repro` command (e.g. `train-dit ...`) to run it with
    `processes_per_node` processes on each of `nodes` nodes. Multi-node: `srun` with one task per node (the job's
    SLURM allocation: --nodes N, its CPUs and GPUs per node), each task running `pyramid-repro launch`."""
    if nodes < 1 or processes_per_node < 1:
        raise ValueError(f"nodes and processes_per_node must be >= 1 (got {nodes}, {processes_per_node})")
    if nodes == 1 and processes_per_node == 1:
        return "pyramid-repro"
    inner = f"pyramid-repro launch --nodes {nodes} --processes-per-node {processes_per_node} --"
    if nodes == 1:
        return inner
    gpus = f"--gpus-per-node={gpus_per_node} " if gpus_per_node > 0 else ""
    return (f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --cpus-per-task={cpus_per_node} {gpus}"
            f"--kill-on-bad-exit=1 {inner}")


def expand_hostlist(hostlist: str) -> list[str]:
    """SLURM's compressed host list ("gpu[01-03,07],login1") as host names, in order. Uses `scontrol show
    hostnames` when it is there (it knows every form); otherwise one bracket group per name is understood."""
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()
    hosts: list[str] = []
    for prefix, body, suffix in re.findall(r"([^,\[\]]*)(?:\[([^\]]*)\])?([^,\[\]]*),?", hostlist):
        if not body:
            if prefix + suffix:
                hosts.append(prefix + suffix)
            continue
        for part in body.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            hosts += [f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi or lo) + 1)]
    return hosts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous(nodes: int, env: Mapping[str, str]) -> tuple[int, str, int]:
    """(machine rank, main process address, port) of this copy of a launch. One node: rank 0 on this machine, a
    free port. Several: from the environment `srun` gives each task (SLURM_NODEID, SLURM_STEP_NODELIST or
    SLURM_JOB_NODELIST, SLURM_JOB_ID); a clear error outside SLURM."""
    if nodes == 1:
        return 0, "127.0.0.1", free_port()
    missing = [k for k in ("SLURM_NODEID", "SLURM_JOB_ID") if k not in env]
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if missing or not nodelist:
        raise RuntimeError(f"pyramid-repro launch --nodes {nodes}: run one copy per node under srun (SLURM_NODEID, "
                           f"SLURM_JOB_ID and SLURM_STEP_NODELIST are not all set: missing "
                           f"{missing or ['SLURM_STEP_NODELIST']})")
    hosts = expand_hostlist(nodelist)
    if len(hosts) != nodes:
        raise RuntimeError(f"pyramid-repro launch --nodes {nodes}: the step's node list {nodelist!r} has "
                           f"{len(hosts)} hosts")
    return int(env["SLURM_NODEID"]), hosts[0], PORT_BASE + int(env["SLURM_JOB_ID"]) % PORT_SPAN


def accelerate_command(command: list[str], nodes: int, processes_per_node: int, machine_rank: int, main_ip: str,
                       port: int, python: str = sys.executable) -> list[str]:
    """`accelerate launch` of `pyramid_repro.cli <command>` on this machine: processes_per_node processes of
    nodes * processes_per_node in all. Precision and device come from the profile (the job's Accelerator)."""
    cmd = [python, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(nodes * processes_per_node), "--num_machines", str(nodes),
           "--machine_rank", str(machine_rank), "--main_process_ip", main_ip, "--main_process_port", str(port),
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "pyramid_repro.cli", *command]
    return cmd
