"""DiT curriculum trainer: loss falls, resume after a real kill == uninterrupted (FID snapshots included), NaN
stops cleanly, ledger rows, generated videos on disk; the FID-point job (eval/fid_points.py) turns the snapshots
into fid.csv rows and per-point features. Reuses the smoke workflow's dataset, VAE, latents and probe."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import kill_after_first_checkpoint

CURRICULUM = ("train.curriculum=[{name: image, kind: image, height: 16, width: 16, frames: 1, steps: %d, "
              "batch_size: 4, fid_points: %d}]")


def _cmd(base: Path, out: Path, steps: int, *extra: str, fid_points: int = 0) -> list[str]:
    return [sys.executable, "-m", "pyramid_repro.cli", "train-dit", "--profile", "smoke", "--experiment", "pyramid",
            "--stage", "image", "--threads", "1", "--out", str(out), "--set", f"results={base}/results",
            "--set", CURRICULUM % (steps, fid_points), "--set", f"train.fid_every={int(fid_points > 0)}",
            "--set", "train.ckpt_every=5", *extra]


def _trace(out: Path) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(out / "train_log.csv"))]


def _snapshot(folder: Path) -> tuple[dict, dict]:
    """(record without the wall-clock device-hours, weights) of one FID snapshot."""
    from pyramid_repro.train.dit import SNAPSHOT_INFO

    info = json.loads((folder / SNAPSHOT_INFO).read_text())
    info.pop("device_hours")
    return info, _weights(folder)


@pytest.mark.timeout(900)
def test_resume_after_kill_equals_uninterrupted_and_ledger(smoke_run: Path, tmp_path: Path):
    """...and the FID snapshots: a point every 5 steps, the first (step 5) saved before the kill, which the resumed
    job keeps untouched; every snapshot equals the uninterrupted run's, and a fresh start deletes stale ones."""
    steps, points = 120, 24
    full = tmp_path / "full"
    stale = full / "fid_snapshots" / "step_999"
    stale.mkdir(parents=True)
    (stale / "fid_point.json").write_text("{}")
    subprocess.run(_cmd(smoke_run, full, steps, fid_points=points), check=True, capture_output=True, timeout=600)
    assert not stale.exists(), "a fresh start kept a stale snapshot"
    resumed = tmp_path / "resumed"
    kill_after_first_checkpoint(_cmd(smoke_run, resumed, steps, fid_points=points), resumed / "checkpoints")
    assert not (resumed / "done.json").exists(), "the job finished before it could be killed"
    first = resumed / "fid_snapshots" / "step_5"
    assert (first / "fid_point.json").is_file(), "no snapshot was saved before the kill"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.iterdir()}
    r = subprocess.run(_cmd(smoke_run, resumed, steps, fid_points=points), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout
    a, b = _trace(full), _trace(resumed)
    assert len(a) == len(b) == steps
    assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.iterdir()} == before
    names = sorted(p.name for p in (full / "fid_snapshots").iterdir())
    assert names == sorted(p.name for p in (resumed / "fid_snapshots").iterdir())
    assert names == sorted(f"step_{s}" for s in range(5, steps + 1, 5))
    for name in names:
        (info_a, w_a), (info_b, w_b) = (_snapshot(o / "fid_snapshots" / name) for o in (full, resumed))
        assert info_a == info_b and info_a["step"] == int(name[5:]), name
        assert all(torch.allclose(w_a[k], w_b[k], rtol=1e-5, atol=1e-6) for k in w_a), name
    rows = list(csv.DictReader(open(resumed / "ledger.csv")))
    assert len(rows) == 1 and int(rows[0]["resumed_from_step"]) > 0
    for key in ("experiment", "stage", "wall_seconds", "device_name", "device_hours", "steps", "samples", "tokens",
                "flops", "commit", "config_hash", "profile"):
        assert rows[0][key] != "", key
    # the stage of each step is random and the stages' losses differ in scale: compare long windows
    assert np.mean(a[-40:]) < np.mean(a[:40]), "training did not lower the loss"


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(smoke_run: Path, tmp_path: Path):
    out = tmp_path / "nan"
    r = subprocess.run(_cmd(smoke_run, out, 200, "--set", "train.lr=1.0e+30", "--set", "train.ckpt_every=1",
                            "--set", "train.grad_clip=0"), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "non-finite loss" in r.stderr and "last good checkpoint" in r.stderr
    assert any((out / "checkpoints").glob("step_*.pt")), "no checkpoint kept"
    assert not (out / "done.json").exists()


def test_smoke_samples_are_real_videos(smoke_run: Path):
    from pyramid_repro.data.video_io import read_video

    folder = smoke_run / "results" / "smoke" / "pyramid" / "samples" / "synthetic"
    index = json.loads((folder / "samples.json").read_text())
    assert index["samples"] and (folder / "contact_sheet.png").is_file()
    frames, _ = read_video(folder / index["samples"][0]["path"])
    assert frames.shape == (9, 16, 16, 3) and frames.std() > 0
    curve = list(csv.DictReader(open(smoke_run / "results" / "smoke" / "pyramid" / "fid_curve.csv")))
    assert curve and all(float(r["fid"]) > 0 for r in curve)
    # every point has its bootstrap interval (basic: it may lie below a biased estimate, never inverted)
    assert all(float(r["fid_lo"]) <= float(r["fid_hi"]) for r in curve)
    assert [int(r["step"]) for r in curve] == sorted(int(r["step"]) for r in curve)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(folder.glob("*.safetensors"))))


def test_fid_points_job_turns_snapshots_into_rows_and_units(smoke_run: Path):
    """The smoke run's fid-points jobs: per stage one fid.csv row (FID_COLUMNS) per snapshot, each naming its npz
    of n_images x D float64 probe features with the caption of each image (the same captions, in the same order,
    for pyramid and fullseq), generated under train.fid_guidance; the curve carries the column."""
    from pyramid_repro.config import load_config
    from pyramid_repro.eval.fid_points import expected_steps, fid_captions, fid_guidance
    from pyramid_repro.train.dit import FID_COLUMNS, owned_stage_dir, stage_captions

    units = {}
    for exp in ("pyramid", "fullseq"):
        cfg = load_config("smoke", {"results": f"{smoke_run}/results"}, exp)
        n = cfg.train.fid_samples
        for st in cfg.train.curriculum:
            f = owned_stage_dir(cfg, exp, st) / "fid.csv"
            rows = list(csv.DictReader(open(f)))
            assert list(rows[0]) == FID_COLUMNS
            assert [int(r["step"]) for r in rows] == expected_steps(cfg, exp, st.name)
            if st.kind == "image":
                assert len(rows) >= 2, (exp, "the image stage's FID curve needs at least two points")
            for r in rows:
                with np.load(cfg.layout.results / exp / r["units_file"]) as z:
                    assert z["features"].dtype == np.float64 and z["features"].ndim == 2
                    assert z["features"].shape[0] == n and z["units"].shape == (n,)
                    assert list(z["units"]) == fid_captions(stage_captions(cfg, st.name)[1], n)
                    assert float(z["guidance"]) == fid_guidance(cfg) == 2.0
                    assert int(z["step"]) == int(r["step"]) and f"{float(z['fid']):.4f}" == r["fid"]
                    units[exp, st.name] = list(z["units"])
        curve = list(csv.DictReader(open(cfg.layout.fid_curve(exp))))
        assert curve and all(r["units_file"].endswith(".npz") for r in curve)
    for st in ("image", "video_lowres", "video_highres"):
        assert units["pyramid", st] == units["fullseq", st], st


def test_fid_points_job_is_resumable_and_deterministic(smoke_run: Path, tmp_path: Path, monkeypatch):
    """A rerun keeps the points whose npz is there (nothing is generated again) and writes the same rows; a
    point whose npz is gone is generated again, to the same features."""
    import shutil

    from pyramid_repro.config import load_config
    from pyramid_repro.eval import fid_points as fp

    cfg = load_config("smoke", {"results": f"{smoke_run}/results"}, "pyramid")
    src = cfg.layout.stage("pyramid", "image")
    stage = tmp_path / "image"
    shutil.copytree(src, stage, ignore=shutil.ignore_patterns("checkpoints*"))
    real = fp.score_point
    monkeypatch.setattr(fp, "score_point", lambda *a, **k: pytest.fail("a finished point was generated again"))
    fp.fid_points(cfg, "pyramid", "image", stage)
    strip = [{k: v for k, v in r.items() if k != "units_file"} for r in csv.DictReader(open(src / "fid.csv"))]
    assert [{k: v for k, v in r.items() if k != "units_file"} for r in csv.DictReader(open(stage / "fid.csv"))] \
        == strip
    first = sorted((stage / "fid_points").glob("*.npz"))[0]
    old = np.load(first)["features"]
    first.unlink()
    calls = []
    monkeypatch.setattr(fp, "score_point", lambda *a, **k: calls.append(1) or real(*a, **k))
    fp.fid_points(cfg, "pyramid", "image", stage)
    assert calls == [1]
    np.testing.assert_allclose(np.load(first)["features"], old, rtol=1e-5, atol=1e-6)


def test_fid_points_job_names_a_missing_snapshot_folder_and_its_writer(tmp_path: Path):
    from pyramid_repro.config import load_config
    from pyramid_repro.eval.fid_points import fid_points

    cfg = load_config("smoke", {"results": str(tmp_path)}, "bidirectional")
    with pytest.raises(FileNotFoundError, match=r"pyramid/dit/image/fid_snapshots \(no such folder\).*"
                       r"pyramid-repro train-dit --experiment pyramid --stage image"):
        fid_points(cfg, "bidirectional", "image")  # smoke shares pyramid's image stage
    with pytest.raises(FileNotFoundError, match=r"bidirectional/dit/video_lowres/fid_snapshots.*train-dit "
                       "--experiment bidirectional --stage video_lowres"):
        fid_points(cfg, "bidirectional", "video_lowres")


def test_fid_curve_loads_a_fid_csv_from_before_units_file(tmp_path: Path):
    import pandas as pd

    from pyramid_repro.config import load_config
    from pyramid_repro.train.dit import FID_COLUMNS, collect_fid_curve

    cfg = load_config("smoke", {"results": str(tmp_path)}, "bidirectional")
    old = cfg.layout.stage("pyramid", "image")  # shared image stage: pyramid's
    old.mkdir(parents=True)
    (old / "fid.csv").write_text("step,samples_seen,tokens_seen,flops,device_hours,fid,fid_lo,fid_hi,backend,stage\n"
                                 "3,12,100,1.0,0.01,50.0,40.0,60.0,fid-probe,image\n")
    new = cfg.layout.stage("bidirectional", "video_lowres")
    new.mkdir(parents=True)
    (new / "fid.csv").write_text(",".join(FID_COLUMNS) + "\n"
                                 "9,20,300,2.0,0.02,30.0,25.0,35.0,fid-probe,video_lowres,"
                                 "dit/video_lowres/fid_points/step_9.npz\n")
    curve = pd.read_csv(collect_fid_curve(cfg, "bidirectional", tmp_path / "curve.csv"))
    assert list(curve.columns) == FID_COLUMNS and list(curve["step"]) == [3, 9]
    assert pd.isna(curve["units_file"][0]) and curve["units_file"][1] == "dit/video_lowres/fid_points/step_9.npz"


@pytest.mark.parametrize("fid_guidance,expected", [(2.5, 2.5), (None, 3.0)])
def test_fid_points_generate_both_arms_under_one_guidance(monkeypatch, fid_guidance, expected):
    """The pyramid's first frame takes the first-frame scale, the full-sequence model's one-frame generation the
    video scale (generation/generate.py): the FID points set both to train.fid_guidance (None: the profile's first-frame
    scale), so the two arms of the comparison are generated alike."""
    from pyramid_repro.config import load_config
    from pyramid_repro.eval import fid_points as fp
    from pyramid_repro.generation import generate
    from pyramid_repro.generation.generate import TextCondition
    from pyramid_repro.models import build_dit
    from pyramid_repro.train.dit import CaptionBank

    over = {"pyramid": {"sampler": {"guidance_first_frame": 3.0, "guidance_video": 2.0}},
            "train": {"fid_guidance": fid_guidance}}
    scales = {}
    real = generate._cfg_velocity

    def spy(model, text, empty, scale, *a, **k):
        scales.setdefault(exp, set()).add(scale)
        return real(model, text, empty, scale, *a, **k)

    monkeypatch.setattr(generate, "_cfg_velocity", spy)
    g = torch.Generator().manual_seed(0)
    bank = CaptionBank(["a", "b"], TextCondition(torch.randn(3, 8, 16, generator=g), torch.ones(3, 8, dtype=torch.bool),
                                                 torch.randn(3, 8, generator=g)))
    for exp in ("pyramid", "fullseq"):
        cfg = load_config("smoke", over, exp)
        assert (cfg.pyramid.stages > 1) == (exp == "pyramid")
        torch.manual_seed(0)
        model = build_dit(cfg, 16, 8).eval()
        lat = fp.generate_first_frames(model, cfg, bank, ["a", "b", "a"], (4, 4), cfg.seed)
        assert lat.shape == (3, cfg.vae.latent_channels, 1, 4, 4)
    assert scales == {"pyramid": {expected}, "fullseq": {expected}}


def test_training_does_not_import_evaluation_scoring():
    code = ("import sys, pyramid_repro.train.dit; "
            "print([m for m in sys.modules if m in ('pyramid_repro.eval.backends', 'pyramid_repro.eval.fid_points')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.strip() == "[]"


def test_image_stage_is_the_same_computation_for_the_ablations_that_share_it(smoke_run: Path, tmp_path: Path):
    """The premise of train.share_image_stage: trained on their own, the image stages of pyramid and of the
    ablations that differ only in IMAGE_STAGE_UNUSED (history, attention across frames) end with the same weights
    and loss trace; fullseq's does not."""
    def run(exp: str) -> Path:
        out = tmp_path / exp
        cmd = [c if c != "pyramid" else exp for c in _cmd(smoke_run, out, 8)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        return out

    ref = run("pyramid")
    for exp in ("bidirectional", "no_temporal_pyramid", "no_history_corruption", "fullseq"):
        out = run(exp)
        a, b = _weights(ref / "final"), _weights(out / "final")
        same = _trace(ref) == _trace(out) and all((a[k] == b[k]).all() for k in a)
        assert same == (exp != "fullseq"), exp


def test_shared_image_stage_trains_once_and_the_ablation_starts_from_it(smoke_run: Path, tmp_path: Path):
    """train.share_image_stage on the command line: `train-dit --experiment bidirectional --stage image` trains
    pyramid's image stage (once), and bidirectional's first video stage starts from its weights."""
    import os

    res = tmp_path / "results" / "smoke"
    res.mkdir(parents=True)
    for d in ("data", "vae", "latents", "probe", "text_cache"):
        (res / d).symlink_to(smoke_run / "results" / "smoke" / d)
    base = [sys.executable, "-m", "pyramid_repro.cli", "train-dit", "--profile", "smoke", "--threads", "1",
            "--set", f"results={tmp_path}/results", "--set", "train.share_image_stage=true",
            "--set", "train.fid_every=0"]
    env = {k: v for k, v in os.environ.items() if k != "PYRAMID_REPRO_OVERRIDES"}
    r = subprocess.run(base + ["--experiment", "bidirectional", "--stage", "image"], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "same computation as pyramid/image" in r.stdout
    assert (res / "pyramid" / "dit" / "image" / "done.json").is_file()
    assert not (res / "bidirectional" / "dit" / "image").exists()
    ledger = list(csv.DictReader(open(res / "pyramid" / "dit" / "image" / "ledger.csv")))
    assert [row["experiment"] for row in ledger] == ["pyramid"]
    r = subprocess.run(base + ["--experiment", "bidirectional", "--stage", "video_lowres", "--max-steps", "2"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (res / "bidirectional" / "dit" / "video_lowres" / "checkpoints").is_dir()


def test_expected_sample_flops_is_the_mean_over_make_batch_draws():
    """The FLOPs that train.match_compute_to equalises are the trainer's own accounting: the analytic expectation
    over stages and learnt frames equals the Monte-Carlo mean of make_batch's sequences."""
    import torch

    from pyramid_repro.config import load_config
    from pyramid_repro.flow import PyramidSchedule, cost
    from pyramid_repro.flow.cost import expected_sample_flops, expected_sample_tokens
    from pyramid_repro.train.sequences import make_batch

    # tiny has 1x1 patches, small 2x2 (the ledger counts tokens after patching)
    for profile, exp in (("tiny", "pyramid"), ("small", "pyramid"), ("tiny", "no_temporal_pyramid"),
                         ("small", "fullseq")):
        cfg = load_config(profile, None, exp)
        st = cfg.train.curriculum[-1]
        m = cfg.model
        T = cost.latent_frames(st.frames, cfg.vae.temporal_compression)
        h = st.height // cfg.vae.spatial_compression
        x = torch.zeros(1, cfg.vae.latent_channels, T, h, h)
        g = torch.Generator().manual_seed(0)
        sched = PyramidSchedule.from_config(cfg.pyramid)
        toks = [make_batch(x, sched, cfg.pyramid, g).video_tokens(m.patch_size) + cfg.text_encoder.max_tokens
                for _ in range(3000)]
        draws = [cost.training_flops(t, m.depth, m.hidden_size, m.mlp_ratio) for t in toks]
        assert expected_sample_flops(cfg, st) == pytest.approx(np.mean(draws), rel=0.03), (profile, exp)
        assert expected_sample_tokens(cfg, st) == pytest.approx(np.mean(toks), rel=0.03), (profile, exp)


def test_match_compute_gives_equal_flops_not_equal_steps():
    from pyramid_repro.config import ConfigError, for_experiment, load_config
    from pyramid_repro.flow.cost import expected_sample_flops
    from pyramid_repro.train.dit import stage_steps

    over = {"model": {"depth": 2}}
    ref = load_config("tiny", over, "pyramid")
    assert ref.train.match_compute_to == "pyramid"
    for exp in ("fullseq", "no_temporal_pyramid", "bidirectional"):
        cfg = load_config("tiny", over, exp)
        assert for_experiment(cfg, "pyramid").model.depth == 2  # the user's overrides carry over
        for st, rs in zip(cfg.train.curriculum, ref.train.curriculum):
            n = stage_steps(cfg, exp, st)
            budget = rs.steps * rs.batch_size * expected_sample_flops(ref, rs)
            per_step = st.batch_size * expected_sample_flops(cfg, st)
            assert abs(n * per_step - budget) <= per_step / 2 + 1e-6 * budget, (exp, st.name)
            if exp != "bidirectional" and st.kind == "video":
                assert n < rs.steps, (exp, st.name)  # the costlier sequences get fewer steps
    plain = load_config("tiny", {"train": {"match_compute_to": None}}, "fullseq")
    plain_steps = [stage_steps(plain, "fullseq", s) for s in plain.train.curriculum]
    assert plain_steps == [s.steps for s in plain.train.curriculum]
    with pytest.raises(ConfigError, match="train.match_compute_to='nope'"):
        load_config("tiny", {"train": {"match_compute_to": "nope"}})


def test_fid_points_are_evenly_spaced_over_a_stage_or_every_fid_every_steps():
    from pyramid_repro.train.dit import fid_point_steps

    assert fid_point_steps(4000, 500, 4) == [1000, 2000, 3000, 4000]
    # a compute-matched stage with fewer steps gets its points at the same shares of its compute
    assert fid_point_steps(699, 500, 4) == [175, 350, 524, 699]
    assert fid_point_steps(200, 500, 1) == [200]
    assert fid_point_steps(3, 500, 4) == [1, 2, 3]  # never more points than steps
    assert fid_point_steps(1200, 500) == [500, 1000, 1200]  # fid_points 0: every fid_every steps and the end
    assert fid_point_steps(1200, 0, 4) == []  # fid_every 0 switches the curve off


def test_packed_size_fills_the_token_budget():
    from pyramid_repro.train.dit import packed_size

    assert packed_size(100, 1000, 16) == 10  # ten samples of 100 tokens fit 1000
    assert packed_size(100, 1000, 4) == 4  # never more than the share still to draw
    assert packed_size(5000, 1000, 16) == 1  # a sample longer than the budget still trains, alone
    assert packed_size(0, 1000, 3) == 3


def test_token_packed_micro_batches_cover_the_batch(smoke_run: Path, tmp_path: Path, monkeypatch):
    """micro_batch_tokens: each micro-batch draws (stage, frame) first and packs as many samples of that shape as
    fit the budget; the micro-batches of a step add up to the batch, and the loss still falls."""
    from pyramid_repro.config import load_config
    from pyramid_repro.train import dit
    from pyramid_repro.train.dit import StageData, packed_size, train_stage

    cfg = load_config("smoke", {"results": f"{smoke_run}/results", "train": {"fid_every": 0}}, "pyramid")
    st = cfg.train.curriculum[-1]
    st.batch_size, st.micro_batch_tokens, st.steps = 8, 24, 40
    seen: list[tuple[int, int, tuple[int, int]]] = []
    real = StageData.micro_batch

    def record(self, micro, schedule, c, g, draw=None):
        seen.append((micro, self.sample_tokens(c, draw), draw))
        return real(self, micro, schedule, c, g, draw)

    monkeypatch.setattr(dit.StageData, "micro_batch", record)
    out = train_stage(cfg, "pyramid", st.name, tmp_path / "packed")
    # replay the packing: per step the sizes follow the budget and sum to the batch
    remaining, sizes = 8, set()
    for n, tokens, draw in seen:
        assert draw is not None
        assert n == packed_size(tokens, 24, remaining), (n, tokens, remaining)
        sizes.add(n)
        remaining -= n
        if remaining == 0:
            remaining = 8
    assert remaining == 8, "a step's micro-batches did not add up to batch_size"
    assert len(sizes) > 1, "every micro-batch had the same size: the budget packed nothing"
    done = json.loads((out / "done.json").read_text())
    assert done["samples"] == 8 * 40
    loss = _trace(out)
    assert np.mean(loss[-10:]) < np.mean(loss[:10])
