"""How training jobs start their processes (pyramid_repro.launch) and what the workflow asks SLURM for
(Plan.resources): one process, several on one node, one srun task per node over several nodes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyramid_repro import launch
from pyramid_repro.commands import launch as launch_command
from pyramid_repro.launch import PORT_BASE, PORT_SPAN, accelerate_command, expand_hostlist, launch_prefix, rendezvous
from pyramid_repro.workflow import Plan


def test_launch_prefix_one_process_several_processes_several_nodes():
    assert launch_prefix(1, 1, 2) == "pyramid-repro"
    assert launch_prefix(1, 2, 2) == "pyramid-repro launch --nodes 1 --processes-per-node 2 --"
    multi = launch_prefix(16, 8, 64)
    assert multi.startswith("srun --nodes=16 --ntasks=16 --ntasks-per-node=1 --cpus-per-task=64 ")
    assert multi.endswith("pyramid-repro launch --nodes 16 --processes-per-node 8 --")
    assert "--gpus-per-node" not in multi and "--gpus-per-node=8 " in launch_prefix(16, 8, 64, 8)
    with pytest.raises(ValueError, match="nodes and processes_per_node"):
        launch_prefix(0, 1, 1)


def test_hostlist_expansion_without_scontrol(monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    assert expand_hostlist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert expand_hostlist("n[8-10]") == ["n8", "n9", "n10"]
    assert expand_hostlist("a1,b2") == ["a1", "b2"]
    assert expand_hostlist("rack[1-2]-ib") == ["rack1-ib", "rack2-ib"]


def test_rendezvous_from_the_srun_task_environment(monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    env = {"SLURM_NODEID": "3", "SLURM_JOB_ID": "123456", "SLURM_STEP_NODELIST": "gpu[01-16]"}
    rank, ip, port = rendezvous(16, env)
    assert (rank, ip, port) == (3, "gpu01", PORT_BASE + 123456 % PORT_SPAN)
    # every node derives the same address and port
    assert rendezvous(16, {**env, "SLURM_NODEID": "0"})[1:] == (ip, port)
    with pytest.raises(RuntimeError, match="SLURM_NODEID"):
        rendezvous(16, {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "gpu[01-16]"})
    with pytest.raises(RuntimeError, match="has 2 hosts"):
        rendezvous(16, {**env, "SLURM_STEP_NODELIST": "gpu[01-02]"})
    rank, ip, port = rendezvous(1, {})
    assert (rank, ip) == (0, "127.0.0.1") and port > 0


def test_accelerate_command_line():
    cmd = accelerate_command(["train-dit", "--profile", "paper"], 16, 8, 3, "gpu01", 24321, python="python")
    s = " ".join(cmd)
    assert s.startswith("python -m accelerate.commands.launch --multi_gpu --num_processes 128 --num_machines 16 "
                        "--machine_rank 3 --main_process_ip gpu01 --main_process_port 24321 ")
    assert s.endswith("-m pyramid_repro.cli train-dit --profile paper")


def test_launch_cli_outside_slurm_is_one_clear_line(capsys):
    assert launch_command.main(["--nodes", "2", "--", "train-dit"]) == 2
    assert "under srun" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        launch_command.main(["--nodes", "1"])


# each process writes its own file: lines printed by two processes into one pipe can interleave
_PROBE = "import os, pathlib, torch.distributed as d; d.init_process_group('gloo'); r = d.get_rank(); " \
         "pathlib.Path(os.environ['PROBE_DIR'], f'rank{r}').write_text(f'{r} {d.get_world_size()}'); " \
         "d.barrier(); d.destroy_process_group()"


def test_two_simulated_nodes_meet_and_run_every_process(tmp_path):
    """Two copies of `pyramid-repro launch --nodes 2 --processes-per-node 2`, as srun would start them on two nodes
    (here both on this machine): accelerate's static rendezvous joins the four processes into one process group."""
    # the launched command is a probe module that joins the process group (instead of `-m pyramid_repro.cli ...`)
    shim = tmp_path / "shim"
    (shim / "pyramid_repro_probe").mkdir(parents=True)
    (shim / "pyramid_repro_probe" / "__init__.py").write_text("")
    (shim / "pyramid_repro_probe" / "__main__.py").write_text(_PROBE)
    job_id = str(os.getpid() % 10000 + 5000)
    probe_dir = tmp_path / "ranks"
    probe_dir.mkdir()
    env = {"SLURM_JOB_ID": job_id, "SLURM_STEP_NODELIST": "localhost,localhost", "PROBE_DIR": str(probe_dir),
           "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", _NODE, str(rank)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, **env, "SLURM_NODEID": str(rank)})
             for rank in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    written = sorted(f.read_text() for f in probe_dir.iterdir())
    assert written == ["0 4", "1 4", "2 4", "3 4"], outs


# One simulated node: pyramid_repro.launch's own pieces, with the command replaced by the probe module
_NODE = """
import os, subprocess, sys
from pyramid_repro.launch import accelerate_command, rendezvous
rank, ip, port = rendezvous(2, os.environ)
cmd = accelerate_command(["x"], 2, 2, rank, ip, port)
cmd = cmd[:cmd.index("pyramid_repro.cli")] + ["pyramid_repro_probe"]
sys.exit(subprocess.call(cmd))
"""


def test_plan_resources_follow_the_profile():
    smoke = Plan({"profile": "smoke"})
    res = smoke.training_resources()
    assert res["cpus_per_task"] == 1 and "gpus" not in res and "slurm_extra" not in res and "mpi" not in res
    assert res["processes_per_node"] == 1 and smoke.launcher(res) == "pyramid-repro"
    assert "slurm_account" not in res and "slurm_partition" not in res

    paper = Plan({"profile": "paper", "compute": {"account": "proj42"}})
    res = paper.training_resources()
    assert (res["gpus"], res["nodes"], res["processes_per_node"], res["cpus_per_task"]) == (8, 16, 8, 64)
    assert res["slurm_extra"] == "--gpus-per-node=8" and res["mpi"] == "srun" and res["tasks"] == 16
    assert res["slurm_partition"] == "gpu" and res["slurm_account"] == "proj42"
    assert paper.launcher(res).startswith("srun --nodes=16 ") and paper.process_threads(res) == 8
    vae = paper.training_resources(multi_node=False)
    assert vae["cpus_per_task"] == 64  # compute.vae_cpus unset: cpus_per_job
    tiny = Plan({"profile": "tiny", "compute": {"cpus_per_job": 1, "vae_cpus": 2}})
    assert tiny.training_resources(multi_node=False)["cpus_per_task"] == 2 and tiny.vae_cpus() == 2
    assert tiny.probe_cpus() == 1  # tiny: the probe runs on one core beside the first DiT job
    assert Plan({"profile": "tiny", "compute": {"probe_cpus": 2}}).probe_cpus() == 2
    # probe_cpus 0: cpus_per_job
    assert Plan({"profile": "tiny", "compute": {"cpus_per_job": 3, "probe_cpus": 0}}).probe_cpus() == 3
    assert tiny.training_resources()["cpus_per_task"] == 1 and tiny.process_threads(tiny.training_resources()) == 1
    assert vae["nodes"] == 1 and "mpi" not in vae and paper.launcher(vae).startswith("pyramid-repro launch --nodes 1")
    assert paper.gpu_resources()["gpus"] == 1 and paper.gpu_resources()["slurm_extra"] == "--gpus-per-node=1"

    two = Plan({"profile": "smoke", "compute": {"processes_per_node": 2, "cpus_per_job": 2}})
    res = two.training_resources()
    assert two.launcher(res) == "pyramid-repro launch --nodes 1 --processes-per-node 2 --"
    assert two.process_threads(res) == 1
