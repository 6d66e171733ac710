"""Metric sanity of the `synthetic` proxy backend, fast: with a probe network read from a small fixed file
(tests/fixtures/probe_16px.safetensors, fitted once on 16x16 renders of the synthetic world by the real training
routine: tests/fixtures/make_probe_fixture.py), every dimension must score real renders of the suite's prompts
above noise, shuffled-frame and wrong-caption videos by a margin. The same checks with the tiny profile's fully
trained probe run in test_eval.py (slow).

The probe is fixed, not fitted here, because what a quickly fitted probe reads depends on the machine: fitted in
the test, "multiple objects" scored 0.17 on real clips on one 2-core machine and above 0.5 on another, and the
same happens here with one thread instead of two. Fitting itself is tested below with a margin that holds across
seeds and thread counts."""

from pathlib import Path

import numpy as np
import pytest
import torch

from safetensors.torch import load_file

from pyramid_repro.config import load_config
from pyramid_repro.data.synthetic import Factors, render_clip, sample_factors
from pyramid_repro.eval import backends as be
from pyramid_repro.eval.probe import ProbeNet, accuracies, fit_probe, frame_labels
from pyramid_repro.eval.prompts import load_suite

S, T = 16, 17
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "probe_16px.safetensors"


def frames(rng, n_clips, per_clip):
    xs, ys = [], []
    for _ in range(n_clips):
        f = sample_factors(rng, frames=T)
        clip = torch.from_numpy(render_clip(f, S, S, T)).permute(0, 3, 1, 2).float() / 127.5 - 1
        lab = frame_labels(f.to_dict())
        for t in rng.choice(T, per_clip, replace=False):
            xs.append(clip[t])
            ys.append(lab)
    return torch.stack(xs), {k: torch.stack([y[k] for y in ys]) for k in ys[0]}


@pytest.fixture(scope="module")
def quick_probe():
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    x, y = frames(rng, 400, 5)
    probe, loss = fit_probe(x, y, steps=700, batch=64, seed=0)
    xv, yv = frames(np.random.default_rng(1), 60, 3)
    return probe, accuracies(probe, xv, yv), loss


@pytest.fixture(scope="module")
def fixed_probe() -> ProbeNet:
    probe = ProbeNet()
    probe.load_state_dict({k: v.float() for k, v in load_file(str(FIXTURE)).items()})
    return probe.eval()


def test_quick_probe_learns_colour_and_background(quick_probe):
    _, acc, loss = quick_probe
    # chance is 1/6 for colour and 1/4 for background; a few hundred steps at 16x16 already read them. Measured for
    # data and fit seeds 0-3, each with one and with two threads (the fitted losses differed between thread counts):
    # held-out colour 0.94-1.0, background 0.98-1.0
    assert acc["colour"] > 0.8 and acc["background"] > 0.9, acc
    assert np.isfinite(loss)


def _variants(prompts, real, rng):
    # wrong caption: each video is scored against the ground truth of another prompt that shares its primary
    # dimension (so the other prompt's content differs in exactly what that dimension reads)
    wrong = []
    for i, p in enumerate(prompts):
        same = [j for j, q in enumerate(prompts) if j != i and q.dimensions[0] == p.dimensions[0]]
        wrong.append(real[same[0]] if same else real[i])
    return {"noise": [rng.integers(0, 256, v.shape, dtype=np.uint8) for v in real],
            "shuffled": [v[rng.permutation(len(v))] for v in real],
            "wrong": wrong}


# corruptions each dimension must see (a dimension blind to one by construction, e.g. flicker of a shuffled
# static clip, is not asserted); margins in raw score units
SANITY = {
    "object_class": {"noise": 0.3, "wrong": 0.3}, "color": {"noise": 0.5, "wrong": 0.5},
    # the 16x16 probe finds both objects of one of the six two-object prompts (1/6), corrupted clips none
    "multiple_objects": {"noise": 0.1, "wrong": 0.1}, "spatial_relationship": {"noise": 0.5, "wrong": 0.5},
    "dynamic_degree": {"noise": 0.5, "wrong": 0.5, "shuffled": 0.3},
    "motion_smoothness": {"noise": 0.2, "shuffled": 0.01},
    # subject consistency vs shuffled frames differs by ~0.001 with this small probe (max-pooled features barely
    # see where the object is); asserted with the trained tiny probe in test_eval.py
    "subject_consistency": {"noise": 0.5, "wrong": 0.5},
    "background_consistency": {"noise": 0.2}, "temporal_flickering": {"noise": 0.2},
}


def test_every_synthetic_dimension_ranks_real_above_corruptions(fixed_probe):
    probe = fixed_probe
    cfg = load_config("smoke")
    prompts = load_suite("synthetic", cfg)
    real = [render_clip(Factors.from_dict(p.factors), S, S, T) for p in prompts]
    good = be.synthetic_dimensions(real, prompts, probe)
    assert set(good) == set(SANITY)
    # real clips near each dimension's best
    assert good["temporal_flickering"] > 0.98 and good["background_consistency"] > 0.98
    assert good["spatial_relationship"] == 1.0 and good["dynamic_degree"] == 1.0 and good["color"] > 0.8
    for name, vids in _variants(prompts, real, np.random.default_rng(0)).items():
        bad = be.synthetic_dimensions(vids, prompts, probe)
        for dim, margins in SANITY.items():
            if name in margins:
                assert good[dim] > bad[dim] + margins[name], (dim, name, good[dim], bad[dim])
