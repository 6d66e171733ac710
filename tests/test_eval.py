"""Evaluation: VBench aggregation against the paper, prompt suites, metric sanity of the synthetic proxy."""

import json
from pathlib import Path

import numpy as np
import pytest

from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.eval import backends as be
from pyramid_repro.eval.prompts import load_suite
from pyramid_repro.eval.vbench import aggregate, parse_results, vbench_command
from pyramid_repro.report.paper import load_paper_table


def test_vbench_aggregation_reproduces_table1_from_table5():
    t5 = load_paper_table("table5")
    agg = aggregate({r.dimension: r.score / 100 for r in t5.itertuples()})
    assert agg["total"] == pytest.approx(81.72, abs=0.01)
    assert agg["quality"] == pytest.approx(84.74, abs=0.01)
    assert agg["semantic"] == pytest.approx(69.62, abs=0.01)
    assert agg["missing"] == []


def test_vbench_aggregation_rejects_percentages_and_unknown_dimensions():
    with pytest.raises(ValueError, match="divide percentages by 100"):
        aggregate({"color": 82.87})
    with pytest.raises(ValueError, match="unknown VBench dimension"):
        aggregate({"colour": 0.8})
    partial = aggregate({"temporal_flickering": 0.99, "color": 0.5})
    assert "scene" in partial["missing"] and partial["total"] is not None


def test_vbench_runner_command_and_result_parsing(tmp_path):
    cfg = load_config("smoke")
    with pytest.raises(ConfigError, match="eval.vbench_env"):
        vbench_command(cfg, tmp_path, tmp_path / "o", tmp_path / "info.json")
    py = tmp_path / "python"
    py.write_text("")
    (tmp_path / "w").mkdir()
    cfg.eval.vbench_env, cfg.eval.vbench_weights = str(py), str(tmp_path / "w")
    cmd = vbench_command(cfg, tmp_path / "videos", tmp_path / "o", tmp_path / "info.json")
    assert cmd[0] == str(py) and "vbench_standard" in cmd[2] and cmd[-1] == str(tmp_path / "videos")
    res = tmp_path / "results_eval_results.json"  # VBench's layout: {dimension: [mean, per-video list]}
    res.write_text(json.dumps({"color": [0.8287, [{"video_path": "a.mp4", "video_results": 1.0}]],
                               "temporal_flickering": [0.9949, []]}))
    assert parse_results(res) == {"color": 0.8287, "temporal_flickering": 0.9949}


def test_suites():
    cfg = load_config("tiny")
    syn = load_suite("synthetic", cfg)
    assert len(syn) >= 16 and all(p.factors for p in syn)
    dims = {d for p in syn for d in p.dimensions}
    assert {"object_class", "color", "multiple_objects", "spatial_relationship", "dynamic_degree",
            "temporal_flickering"} <= dims
    assert len({p.id for p in syn}) == len(syn)
    vb = load_suite("vbench", cfg)
    assert len(vb) == 946
    with pytest.raises(ConfigError, match="evalcrafter_path"):
        load_suite("evalcrafter", cfg)


def _render(p, frames):
    from pyramid_repro.data.synthetic import Factors, render_clip

    return render_clip(Factors.from_dict(p.factors), 16, 16, frames)


def test_weight_free_metrics_rank_real_above_corrupted():
    cfg = load_config("smoke")
    rng = np.random.default_rng(0)
    by = {p.id: p for p in load_suite("synthetic", cfg)}
    static = _render(by["static_a"], 9)
    noise = rng.integers(0, 256, static.shape, dtype=np.uint8)
    assert be.flicker_score(static) > 0.99 > be.flicker_score(noise) + 0.3
    moving = _render(by["move_right"], 9)
    shuffled = moving[rng.permutation(9)]
    # interpolation error of shuffled frames is several times that of the real motion
    assert 1 - be.motion_smoothness_score(shuffled) > 2.5 * (1 - be.motion_smoothness_score(moving))
    assert be.is_dynamic(moving, by["move_right"].factors) == 1.0
    assert be.is_dynamic(static, by["static_a"].factors) == 0.0
    rel = by["rel_left"]
    assert be.relation_holds(_render(rel, 9), rel.factors) == 1.0
    mirrored = _render(rel, 9)[:, :, ::-1]
    assert be.relation_holds(mirrored, rel.factors) == 0.0


def test_probe_backend_scores_real_clips_above_noise(smoke_run: Path):
    """The probe trained by the smoke workflow: real renders of the prompts beat noise and wrong captions."""
    cfg = load_config("smoke", {"results": str(smoke_run / "results")})
    from pyramid_repro.eval.probe import load_probe

    probe = load_probe(cfg)
    prompts = [p for p in load_suite("synthetic", cfg) if "color" in p.dimensions]
    real = [_render(p, 9) for p in prompts]
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, v.shape, dtype=np.uint8) for v in real]
    good = be.synthetic_dimensions(real, prompts, probe)
    bad = be.synthetic_dimensions(noise, prompts, probe)
    wrong = be.synthetic_dimensions(real[1:] + real[:1], prompts, probe)  # each video scored against another caption
    assert good["background_consistency"] > bad["background_consistency"] + 0.1
    assert good["color"] >= wrong["color"]
    fid_real = be.frechet_to_real(be.probe_features(probe, real), cfg)
    fid_noise = be.frechet_to_real(be.probe_features(probe, noise), cfg)
    assert fid_real < fid_noise


def test_fid_kid_near_zero_for_one_distribution_and_grow_with_a_shift():
    """KID (clean-fid's kernel_distance, unbiased MMD) is ~0 in expectation for two samples of one distribution and
    grows with a mean shift; FID likewise; the subset draw is seeded (same inputs, same KID)."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 16))
    same = rng.normal(size=(300, 16))
    fid0, kid0 = be.fid_kid(same, real)
    fid1, kid1 = be.fid_kid(same + 0.5, real)
    fid2, kid2 = be.fid_kid(same + 1.0, real)
    assert abs(kid0) < 0.01 and fid0 < 0.5
    assert 0.01 < kid1 < kid2 and fid0 < fid1 < fid2
    assert fid2 == pytest.approx(16 * 1.0, rel=0.15)  # |mean shift|^2 dominates the Frechet distance
    assert be.fid_kid(same + 0.5, real) == (fid1, kid1)


def test_clean_fid_backend_loads_local_inception_only(tmp_path):
    """clean-fid's Inception wrapper on a TorchScript stand-in with the same interface (no weights here)."""
    import torch

    with pytest.raises(ConfigError, match="inception-2015-12-05.pt"):
        be.inception_features([np.zeros((2, 16, 16, 3), np.uint8)], None)

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                              torch.nn.Linear(48, 2048))

        def forward(self, x):
            return self.layers(x)

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(StandIn()).save(str(path))
    rng = np.random.default_rng(0)
    a = be.inception_features([rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)], str(path))
    assert a.shape == (5, 2048)


def test_probe_reads_shape_and_colour_of_real_frames(smoke_run: Path):
    """Held-out accuracy of the probe the smoke workflow trained (the tiny profile's probe reaches 95.6% shape and
    100% colour on single-object frames; smoke trains it briefly on very few 16x16 frames)."""
    info = json.loads((smoke_run / "results" / "smoke" / "probe" / "probe.json").read_text())
    acc = info["heldout_accuracy"]
    assert {"shape", "colour", "shape_set", "colour_set", "count", "background"} <= set(acc)
    assert acc["colour"] > 0.3 and acc["background"] > 0.5  # well above chance (1/6, 1/4)


@pytest.mark.slow
def test_tiny_probe_accuracy_at_least_95_percent(tmp_path):
    """The synthetic backend on the embedded default profile (about 90 s on 2 cores)."""
    import subprocess
    import sys

    from pyramid_repro.eval.probe import train_probe

    cfg = load_config("tiny", {"results": str(tmp_path)})
    subprocess.run([sys.executable, "-m", "pyramid_repro.cli", "make-dataset", "--profile", "tiny", "--set",
                    f"results={tmp_path}"], check=True, capture_output=True)
    acc = train_probe(cfg)["heldout_accuracy"]
    assert acc["shape"] >= 0.95 and acc["colour"] >= 0.95, acc


# Which corruption each synthetic dimension must see (a corruption a dimension is blind to by construction, e.g.
# shuffling the frames of a static clip, is not asserted).
SANITY = {
    "object_class": ("noise", "wrong"), "color": ("noise", "wrong"), "multiple_objects": ("noise", "wrong"),
    "spatial_relationship": ("noise", "wrong"), "dynamic_degree": ("noise", "wrong"),
    "motion_smoothness": ("noise", "shuffled"), "subject_consistency": ("noise", "shuffled"),
    "background_consistency": ("noise",), "temporal_flickering": ("noise",),
}
PROBE_DIMS = {"object_class", "color", "multiple_objects", "subject_consistency"}


def _sanity(probe, cfg, dims, size=32, frames=17, margin=0.05):
    from pyramid_repro.data.synthetic import Factors, render_clip

    prompts = load_suite("synthetic", cfg)
    real = [render_clip(Factors.from_dict(p.factors), size, size, frames) for p in prompts]
    rng = np.random.default_rng(0)
    variants = {
        "noise": [rng.integers(0, 256, v.shape, dtype=np.uint8) for v in real],
        "shuffled": [v[rng.permutation(len(v))] for v in real],
        # each video scored against the caption of a prompt of the same dimension but other content
        "wrong": [real[(i + 1) % len(real)] if prompts[(i + 1) % len(real)].dimensions == p.dimensions
                  else real[i - 1] for i, p in enumerate(prompts)],
    }
    good = be.synthetic_dimensions(real, prompts, probe)
    for name, vids in variants.items():
        bad = be.synthetic_dimensions(vids, prompts, probe)
        for dim in dims:
            if name in SANITY[dim]:
                assert good[dim] > bad[dim] + margin, (dim, name, good[dim], bad[dim])
    return good


def test_weight_free_dimensions_rank_real_above_noise_shuffled_and_wrong_caption(smoke_run: Path):
    from pyramid_repro.eval.probe import load_probe

    cfg = load_config("smoke", {"results": str(smoke_run / "results")})
    good = _sanity(load_probe(cfg), cfg, [d for d in SANITY if d not in PROBE_DIMS], margin=0.002)
    assert good["temporal_flickering"] > 0.99 and good["spatial_relationship"] == 1.0


@pytest.mark.slow
def test_every_dimension_with_the_tiny_probe(tmp_path):
    """All nine synthetic dimensions, including the probe-based ones, with the tiny profile's trained probe."""
    import subprocess
    import sys

    from pyramid_repro.eval.probe import load_probe, train_probe

    cfg = load_config("tiny", {"results": str(tmp_path)})
    subprocess.run([sys.executable, "-m", "pyramid_repro.cli", "make-dataset", "--profile", "tiny", "--set",
                    f"results={tmp_path}"], check=True, capture_output=True)
    train_probe(cfg)
    _sanity(load_probe(cfg), cfg, list(SANITY), margin=0.002)
