"""The memory plan (train/plan.py, `pyramid-repro plan`) and the trainers' refusal of what cannot fit.

The plan measures activations by running the training forward on the meta device with saved-tensor hooks; on the
CPU target its figure must equal what a real CPU forward of the same batch saves, byte for byte, for every
checkpointing ratio (the census attributes each saved tensor to its block). A planted change of the model (a
doubled MLP) must move it, a job whose plan does not fit a stated memory must stop with one line before it
allocates anything, and the paper profile must fit 80 GB GPUs on 128 processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyramid_repro.commands.plan import main as plan_main
from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.models import build_dit
from pyramid_repro.train.dit import flow_matching_loss
from pyramid_repro.train.plan import (GB, MemoryPlanError, census, check_job, dit_batch, dit_census,
                                      max_micro_batch, plan_dit_stage, plan_profile, plan_vae, states, text_dims,
                                      valid_micro_batches, worst_draw)
from pyramid_repro.train.vae import random_crops

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("experiment", ["pyramid", "fullseq"])
def test_plan_activations_equal_the_bytes_a_cpu_forward_saves(experiment):
    # depth 3: the census replays identical blocks on meta (two run, the third is replayed), so this also checks
    # the replay against a real forward that runs every block
    cfg = load_config("smoke", {"model": {"depth": 3}}, experiment)
    D, P = text_dims(cfg)
    for st in cfg.train.curriculum:
        draw, _, _ = worst_draw(cfg, st)
        micro = st.batch_size
        planned, _ = dit_census(cfg, st, micro, draw, "cpu", "sdpa")
        torch.manual_seed(0)
        model = build_dit(cfg, D, P).train()
        b, text, full = dit_batch(cfg, st, micro, draw, device="cpu")
        real = census(lambda: flow_matching_loss(model, b, text, full), model)
        assert planned.total() > 0
        assert planned.total() == real.total(), st.name
        for ratio in (0.0, 1 / 3, 2 / 3, 1.0):
            assert planned.activations(ratio) == real.activations(ratio), (st.name, ratio)
        kept, peak = planned.activations(1.0)
        assert kept + peak < planned.total()  # checkpointing every block keeps less


def test_a_planted_change_moves_the_plan():
    base = load_config("smoke", {"model": {"depth": 2}}, "pyramid")
    wide = load_config("smoke", {"model": {"depth": 2, "mlp_ratio": 8.0}}, "pyramid")
    st = base.train.curriculum[-1]
    a = plan_dit_stage(base, "pyramid", st, 1, None, "cpu")
    b = plan_dit_stage(wide, "pyramid", wide.train.curriculum[-1], 1, None, "cpu")
    assert b.params > a.params
    assert b.activations_no_ckpt_gb > a.activations_no_ckpt_gb
    assert b.total_gb > a.total_gb


def test_checkpointing_and_sharding_lower_the_plan():
    cfg = load_config("smoke", {"model": {"depth": 4}, "train": {"activation_checkpointing": 0.5},
                                "compute": {"sharding": "full"}}, "pyramid")
    plain = load_config("smoke", {"model": {"depth": 4}}, "pyramid")
    st = cfg.train.curriculum[-1]
    on = plan_dit_stage(cfg, "pyramid", st, 4, None, "cpu")
    off = plan_dit_stage(plain, "pyramid", st, 4, None, "cpu")
    assert on.activations_gb < off.activations_gb == off.activations_no_ckpt_gb == on.activations_no_ckpt_gb
    assert on.states_gb < off.states_gb


def test_states_bytes_per_parameter_and_sharding():
    P, block = 1000, 100
    none = states(P, block, 1, "none", bf16=True)
    assert none == {"weights": 4000, "grads": 4000, "optimizer": 8000, "ema": 4000, "compute_copies": 2000,
                    "ddp_buckets": 0, "gathered_block": 0}
    assert states(P, block, 4, "none", bf16=False)["ddp_buckets"] == 4000  # DDP's own gradient buckets
    z2 = states(P, block, 4, "grads_optimizer", bf16=True)
    # FSDP2 shards the fp32 weights in both modes; ZeRO-2 holds every block's gathered bf16 weights until backward
    assert (z2["weights"], z2["grads"], z2["optimizer"], z2["ema"], z2["compute_copies"], z2["gathered_block"]) == (
        1000, 1000, 2000, 1000, 0, 2000)
    assert states(P, block, 4, "grads_optimizer", bf16=False)["gathered_block"] == 4000  # fp32 on the CPU
    assert states(P, block, 1, "full", bf16=True) == none  # one process is not sharded
    z3 = states(P, block, 4, "full", bf16=True)
    assert (z3["weights"], z3["grads"], z3["compute_copies"], z3["gathered_block"]) == (1000, 1000, 0, 200)


def test_max_micro_batch_solves_then_verifies():
    calls = []

    def total(m, measure=False):
        calls.append((m, measure))
        return 10 + 3 * m + (5 if measure and m == 6 else 0)  # the measurement at 6 says a little more than linear

    assert max_micro_batch(total, 30) == 5  # the line says 6 (28 <= 30), the measurement at 6 (33) does not fit
    assert (6, True) in calls and (5, True) in calls
    assert max_micro_batch(total, 12) == 0
    assert valid_micro_batches(12, 2) == [6, 3, 2, 1]


def test_plan_json_rows_carry_the_fields():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert plan_main(["--profile", "smoke", "--experiment", "pyramid", "--gpu-memory", "80", "--device", "cpu",
                          "--json"]) == 0
    rows = json.loads(buf.getvalue())
    assert [r["stage"] for r in rows] == ["image", "video_lowres", "video_highres", "vae"]
    for r in rows:
        for key in ("experiment", "stage", "micro_batch", "activations_gb", "total_gb", "fits"):
            assert key in r
        assert r["fits"] is True and r["total_gb"] > 0


def test_memory_check_is_off_without_a_stated_memory_on_the_cpu():
    cfg = load_config("smoke", None, "pyramid")
    assert check_job(cfg, "dit", "pyramid", "image", device="cpu") is None  # no memory to check against
    tiny = load_config("smoke", {"compute": {"gpu_memory_gb": 1e-6}}, "pyramid")
    with pytest.raises(MemoryPlanError):
        check_job(tiny, "dit", "pyramid", "image", device="cpu")
    off = load_config("smoke", {"compute": {"gpu_memory_gb": 1e-6, "memory_check": False}}, "pyramid")
    assert check_job(off, "dit", "pyramid", "image", device="cpu") is None


@pytest.mark.parametrize("command", [["train-dit", "--experiment", "pyramid", "--stage", "video_highres"],
                                     ["train-vae"]])
def test_a_job_that_does_not_fit_stops_with_one_line_before_allocating(tmp_path, command):
    results = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "pyramid_repro.cli", *command, "--profile", "smoke",
                        "--set", "compute.gpu_memory_gb=0.00001", "--set", f"results={results}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert r.stdout == ""
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith(f"pyramid-repro {command[0]}: memory plan: ")
    for words in ("micro-batch", "needs", "has 10.0 kB", "--ignore-memory-plan", "compute.memory_check=false"):
        assert words in line
    assert not results.exists()  # no folder, no checkpoint: nothing was set up


def test_paper_profile_fits_80_gb_on_128_processes():
    cfg = load_config("paper")
    rows = plan_profile(cfg, processes=128, memory=80 * GB, target="cuda", vae=False)
    assert len(rows) == 15  # 5 training experiments x 3 stages
    assert all(r.fits for r in rows), [(r.experiment, r.stage, r.total_gb) for r in rows if not r.fits]
    big = max(rows, key=lambda r: r.total_gb)
    assert (big.experiment, big.stage, big.micro_batch) == ("fullseq", "video_highres", 1)
    # without checkpointing and sharding the pyramid's three stages at micro-batches 12 / 6 / 3 do not fit
    off = load_config("paper", {"train": {"activation_checkpointing": 0.0}, "compute": {"sharding": "none"}})
    rows = plan_profile(off, ["pyramid"], processes=128, memory=80 * GB, target="cuda", vae=False)
    assert [(r.micro_batch, r.fits) for r in rows] == [(12, False), (6, False), (3, False)]


def test_paper_vae_fits_on_crops_and_a_crop_is_drawn_per_clip():
    """The paper's VAE trains on the authors' 256x256 crops of 17-frame clips (vae.train_crop): it fits an 80 GB
    GPU by the plan, and on whole 768x1280 frames it would not. random_crops draws a window per clip inside the
    frame and draws nothing (the default run's random stream) without a crop."""
    cfg = load_config("paper")
    assert (cfg.vae.train_crop, cfg.vae.train_frames) == (256, 17)
    row = plan_vae(cfg, 128, 80 * GB, "cuda")
    assert row.fits and row.tokens == row.micro_batch * 17 * 256 * 256
    whole = load_config("paper", {"vae": {"train_crop": 0}})
    assert plan_vae(whole, 128, 80 * GB, "cuda").fits is False
    with pytest.raises(ConfigError, match="vae.train_crop=6: expected 0"):
        load_config("smoke", {"vae": {"train_crop": 6}})
    clips = torch.arange(2 * 3 * 2 * 16 * 16, dtype=torch.float32).reshape(2, 3, 2, 16, 16)
    g = torch.Generator().manual_seed(0)
    crops = random_crops(clips, 8, g)
    assert crops.shape == (2, 3, 2, 8, 8)
    for c, x in zip(crops, clips):  # each crop is a window of its own clip
        t, w = divmod(int((c[0, 0, 0, 0] - x[0, 0, 0, 0]).item()), 16)
        assert torch.equal(c, x[..., t:t + 8, w:w + 8])
    assert random_crops(clips[..., :6, :], 8, g).shape == (2, 3, 2, 6, 8)  # a short side is taken whole
    state = g.get_state()
    assert random_crops(clips, 0, g) is clips and torch.equal(g.get_state(), state)
    assert random_crops(clips, 16, g) is clips and torch.equal(g.get_state(), state)
