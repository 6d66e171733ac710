"""Video sync groups (train.video_sync_group, train/dit.py sync_group_micro_batches): the processes of one group
draw the same clips, captions and caption dropout and learn different (pyramid stage, latent frame) units of them,
with fixed and with token-packed micro-batches; with the default (1) every process draws its own clips. The draws
are computed by the trainer's own StageLoop.micro_batches for rank 0 and rank 1 of two processes (a stand-in job
gives the rank), on a small synthetic latent set; one real two-process run (gloo) trains with a group under
accelerate. Bad values stop with an error naming the field, the value and the process count."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_data_parallel import _launch, _run

from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.flow import PyramidSchedule
from pyramid_repro.generation.generate import TextCondition
from pyramid_repro.provenance import measured_hash
from pyramid_repro.train.dit import CaptionBank, StageData, StageLoop, stage_fingerprint, step_key, sync_position
from pyramid_repro.train.loop import TrainingJob, micro_batch_generator
from pyramid_repro.train.sequences import draw_group_stage_frames

CLIPS = 12


class _Job(TrainingJob):
    """Process `rank` of `world` on the CPU, without an accelerator: all StageLoop.micro_batches reads of a job."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.device = rank, world, torch.device("cpu")


def _data(cfg) -> StageData:
    """CLIPS latent clips of the smoke shapes; caption i's token embedding is the number i (the empty prompt:
    CLIPS), so a micro-batch's text says which clips it holds and which captions were dropped."""
    T = 1 + (cfg.data.frames - 1) // cfg.vae.temporal_compression
    h = cfg.data.height // cfg.vae.spatial_compression
    latents = torch.randn(CLIPS, cfg.vae.latent_channels, T, h, h, generator=torch.Generator().manual_seed(0))
    captions = [f"clip {i}" for i in range(CLIPS)]
    ids = torch.arange(CLIPS + 1, dtype=torch.float32)
    text = TextCondition(ids.view(-1, 1, 1), torch.ones(CLIPS + 1, 1, dtype=torch.bool), ids.view(-1, 1))
    return StageData(latents, captions, captions, CaptionBank(captions, text))


def _draws(group: int, rank: int, stage: dict, step: int = 0, world: int = 2) -> list[dict]:
    """What process `rank` of `world` trains at `step`: per micro-batch the caption ids (CLIPS = dropped), the
    (stage, frame), the loss weight, and the noisy input."""
    cfg = load_config("smoke", {"train": {"video_sync_group": group, "curriculum": [stage]},
                                "text_encoder": {"caption_dropout": 0.25}})
    st = cfg.train.curriculum[0]
    loop = StageLoop(cfg, "pyramid", 0, st, Path("unused"), _Job(rank, world), _data(cfg), None, None, None, None,
                     None)
    return [{"text": text.tokens.flatten().int().tolist(), "unit": (b.stage, b.frame), "weight": weight,
             "last": last, "current": b.current}
            for (b, text), weight, last in loop.micro_batches(step)]


FIXED = {"name": "video", "kind": "video", "height": 16, "width": 16, "frames": 9, "steps": 4, "batch_size": 8,
         "micro_batch_size": 2}
PACKED = {**FIXED, "micro_batch_size": 0, "micro_batch_tokens": 48}


@pytest.mark.parametrize("stage", [FIXED, PACKED], ids=["fixed", "packed"])
def test_a_sync_group_draws_the_same_clips_and_other_units(stage: dict):
    for step in range(3):
        r0, r1 = _draws(2, 0, stage, step), _draws(2, 1, stage, step)
        # the same micro-batches of the same clips, captions and dropout; each a different (stage, frame)
        assert [d["text"] for d in r0] == [d["text"] for d in r1]
        assert all(a["unit"] != b["unit"] for a, b in zip(r0, r1)), [(a["unit"], b["unit"]) for a, b in zip(r0, r1)]
        # each process trains its share of the global batch: weights sum to 1, the last micro-batch says so
        for r in (r0, r1):
            assert sum(d["weight"] for d in r) == pytest.approx(1.0)
            assert [d["last"] for d in r] == [False] * (len(r) - 1) + [True]
            assert sum(len(d["text"]) for d in r) == stage["batch_size"] // 2
    texts = [t for step in range(3) for d in _draws(2, 0, stage, step) for t in d["text"]]
    assert CLIPS in texts and set(texts) - {CLIPS}, "caption dropout never or always dropped: nothing shared"
    # without a group the two processes draw other clips
    r0, r1 = _draws(1, 0, stage), _draws(1, 1, stage)
    assert [d["text"] for d in r0] != [d["text"] for d in r1]


def test_without_a_group_the_micro_batches_are_the_one_process_draws():
    """Group 1 (the default) takes the trainer's path from before the setting: micro-batch mb of a step is
    StageData.micro_batch drawn with micro_batch_generator(step_key, mb), bit for bit."""
    cfg = load_config("smoke", {"train": {"curriculum": [FIXED]}, "text_encoder": {"caption_dropout": 0.25}})
    data, schedule = _data(cfg), PyramidSchedule.from_config(cfg.pyramid)
    key = step_key(cfg.training_seed, 0, 1)
    want = [data.micro_batch(2, schedule, cfg, micro_batch_generator(key, mb)) for mb in (2, 3)]  # rank 1's share
    got = _draws(1, 1, FIXED, step=1)
    assert len(got) == len(want)
    for d, (b, text) in zip(got, want):
        assert torch.equal(d["current"], b.current) and d["unit"] == (b.stage, b.frame)
        assert d["text"] == text.tokens.flatten().int().tolist()


def test_sync_group_draws_are_a_pure_function_of_the_step_and_position():
    """A resumed step draws what the uninterrupted one drew (bit for bit), and with fixed micro-batches the
    global batch of a step is the same on two and on four processes (two groups of two)."""
    a, b = _draws(2, 1, FIXED, step=2), _draws(2, 1, FIXED, step=2)
    assert all(torch.equal(x["current"], y["current"]) and x["text"] == y["text"] for x, y in zip(a, b))
    two = sorted((d["text"], d["unit"]) for r in range(2) for d in _draws(2, r, FIXED, world=2))
    four = sorted((d["text"], d["unit"]) for r in range(4) for d in _draws(2, r, FIXED, world=4))
    assert two == four


def test_group_units_are_distinct_and_keep_the_stage_and_frame_distribution():
    cfg = load_config("smoke", {"pyramid": {"stage_weights": [1.0, 2.0, 1.0]}})
    schedule = PyramidSchedule.from_config(cfg.pyramid)
    frames, draws = 3, 3000
    probs = {(k, j): w / 4 / frames for k, w in enumerate([1.0, 2.0, 1.0]) for j in range(frames)}  # max 1/6
    g = torch.Generator().manual_seed(1)
    for group in (2, 6):  # every unit has probability <= 1/group: all positions learn different units
        seen = [draw_group_stage_frames(frames, schedule, cfg.pyramid, group, g) for _ in range(draws)]
        assert all(len(set(units)) == group for units in seen)
        for p in (0, group - 1):  # each position's unit has the one-process draw's distribution
            freq = Counter(units[p] for units in seen)
            for unit, prob in probs.items():
                assert freq[unit] / draws == pytest.approx(prob, abs=0.03), (group, p, unit)
    # a group larger than the 9 units: each unit goes to floor or ceil of group x its probability positions
    counts = Counter(draw_group_stage_frames(frames, schedule, cfg.pyramid, 20, g))
    assert all(int(20 * prob) <= counts[unit] <= int(20 * prob) + 1 for unit, prob in probs.items()), counts
    # the full sequence has one unit
    full = load_config("smoke", None, "fullseq")
    assert draw_group_stage_frames(frames, PyramidSchedule.from_config(full.pyramid), full.pyramid, 3, g) == \
        [(0, 0)] * 3


def test_bad_sync_group_is_refused_with_the_field_value_and_process_count():
    with pytest.raises(ConfigError, match=r"train.video_sync_group=0: .* >= 1"):
        load_config("smoke", {"train": {"video_sync_group": 0}})
    with pytest.raises(ConfigError) as err:
        sync_position(3, 0, 2)
    assert "train.video_sync_group=3" in str(err.value) and "2 training process" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"train.video_sync_group=4: the 2 training process"):
        _draws(4, 0, FIXED)  # the trainer's own check, before anything is drawn
    assert sync_position(2, 3, 4) == (1, 1)


def test_sync_group_off_keeps_the_hashes_and_on_changes_them():
    """Off (1), the setting leaves the checkpoint fingerprint and the measured hash as they were before it existed
    (checkpoints resume, metrics stay current); on, a run trains on other batches and hashes apart."""
    base, on = load_config("smoke"), load_config("smoke", {"train": {"video_sync_group": 2}})
    st = base.train.curriculum[1]
    assert stage_fingerprint(on, on.train.curriculum[1]) != stage_fingerprint(base, st)
    assert measured_hash(on) != measured_hash(base)
    assert ("train", "video_sync_group") in base.run_keys_to_drop()


@pytest.mark.timeout(900)  # with the shared smoke workflow, when this test is the first to need it
def test_two_processes_train_a_stage_in_one_sync_group(smoke_run: Path, tmp_path: Path):
    out = tmp_path / "synced"
    stage = ("train.curriculum=[{name: video_lowres, kind: video, height: 16, width: 16, frames: 9, steps: 2, "
             "batch_size: 4, micro_batch_size: 1}]")
    _run([*_launch(2), "train-dit", "--profile", "smoke", "--experiment", "pyramid", "--stage", "video_lowres",
          "--threads", "1", "--out", str(out), "--set", f"results={smoke_run}/results", "--set", stage,
          "--set", "train.video_sync_group=2", "--set", "train.fid_every=0", "--set", "compute.device=cpu"])
    done = json.loads((out / "done.json").read_text())
    assert done["processes"] == 2 and done["steps"] == 2 and done["samples"] == 2 * 4
