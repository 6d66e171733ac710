"""Scoring backends: the fid-probe distance behaves like a distance (real frames near the real statistics, noise far,
clean-fid's routine), `pyramid-repro score` writes the agreed metrics JSON from a sampler-style folder, and the
EvalCrafter / clean-fid adapters fail clearly without their local models. Fast: a seeded, untrained probe stands in
for the trained one (its features still separate real frames from noise); the trained probe is covered in
test_eval.py."""

import json
import math

import numpy as np
import pytest
import torch

from pyramid_repro.commands.score import main as score_main
from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.data.synthetic import Factors, render_clip, sample_factors
from pyramid_repro.data.video_io import write_video
from pyramid_repro.eval import backends as be
from pyramid_repro.eval.evalcrafter import TABLE6_NAMES, parse_final_result
from pyramid_repro.eval.probe import ProbeNet
from pyramid_repro.eval.prompts import load_suite
from pyramid_repro.eval.score import score_experiment

H = W = 16
T = 5


def _real(rng, n):
    return [render_clip(sample_factors(rng, frames=T), H, W, T) for _ in range(n)]


def _to_tensor(clips):  # list of uint8 (T, H, W, 3) -> (N, 3, T, H, W) in [-1, 1]
    return torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


@pytest.fixture(scope="module")
def probe_cfg(tmp_path_factory):
    """smoke config with results in a temporary folder holding a seeded probe and real-frame statistics."""
    from safetensors.torch import save_file

    cfg = load_config("smoke")
    cfg.results = str(tmp_path_factory.mktemp("results"))
    torch.manual_seed(0)
    probe = ProbeNet().eval()
    d = cfg.layout.probe()
    d.mkdir(parents=True)
    save_file(probe.state_dict(), str(d / "probe.safetensors"))
    feats = be.probe_features(probe, _real(np.random.default_rng(1), 60))
    np.savez(d / "real_stats.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), n=len(feats))
    return cfg


def test_fid_probe_score_real_near_noise_far(probe_cfg):
    rng = np.random.default_rng(2)
    real = _to_tensor(_real(rng, 40))
    noise = torch.rand_like(real) * 2 - 1
    grey = torch.zeros_like(real)
    f_real, f_noise, f_grey = (be.fid_probe_score(v, probe_cfg) for v in (real, noise, grey))
    assert 0 <= f_real < 0.2 * min(f_noise, f_grey)
    # frames (N, 3, H, W) are accepted too and give the same number as the clips they come from
    frames = real.transpose(1, 2).reshape(-1, 3, H, W)
    assert be.fid_probe_score(frames, probe_cfg) == pytest.approx(f_real, rel=1e-6)


def test_fid_probe_uses_clean_fids_frechet_distance(probe_cfg, monkeypatch):
    import cleanfid.fid

    calls = []
    orig = cleanfid.fid.frechet_distance
    monkeypatch.setattr(cleanfid.fid, "frechet_distance", lambda *a, **k: calls.append(1) or orig(*a, **k))
    stats = np.load(probe_cfg.layout.probe_real_stats())
    # identical Gaussians -> 0
    assert orig(stats["mu"], stats["sigma"], stats["mu"], stats["sigma"]) == pytest.approx(0, abs=1e-3)
    be.fid_probe_score(_to_tensor(_real(np.random.default_rng(3), 4)), probe_cfg)
    assert calls == [1]


def test_fid_probe_score_rejects_bad_input(probe_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"expected a tensor \(N, 3, T, H, W\)"):
        be.fid_probe_score(torch.zeros(2, 4, 5, H, W), probe_cfg)
    with pytest.raises(ValueError, match=r"expected \[-1, 1\]"):
        be.fid_probe_score(torch.full((2, 3, T, H, W), 255.0), probe_cfg)
    cfg = load_config("smoke")
    cfg.results = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="train-probe"):
        be.fid_probe_score(torch.zeros(2, 3, T, H, W), cfg)


def _sample_dir(cfg, experiment, prompts, corrupt=False):
    """A folder as the sampler writes it: <prompt text>-<i>.mp4 and samples.json."""
    out = cfg.layout.samples(experiment, cfg.eval.suite)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    samples = []
    for p in prompts:
        clip = render_clip(Factors.from_dict(p.factors), H, W, T)
        if corrupt:
            clip = rng.integers(0, 256, clip.shape, dtype=np.uint8)
        name = f"{p.text}-0.mp4"
        write_video(out / name, clip, fps=8)
        samples.append({"prompt_id": p.id, "prompt": p.text, "sample_index": 0, "seed": 0, "path": name})
    (out / "samples.json").write_text(json.dumps({"suite": cfg.eval.suite, "samples": samples}))
    return out


def test_score_writes_the_agreed_metrics_json(probe_cfg):
    cfg = probe_cfg
    prompts = load_suite("synthetic", cfg)[:9]
    _sample_dir(cfg, "pyramid", prompts)
    doc = score_experiment(cfg, "pyramid", "synthetic")
    path = cfg.layout.metrics("pyramid", "synthetic")
    on_disk = json.loads(path.read_text())
    for key in ("backend", "label", "experiment", "profile", "config_hash", "commit", "created_utc", "dimensions",
                "aggregate", "fid", "n_videos", "extra"):
        assert key in on_disk, key
    assert on_disk["backend"] == "synthetic" and "synthetic proxy" in on_disk["label"] and on_disk["n_videos"] == 9
    assert on_disk["experiment"] == "pyramid" and on_disk["profile"] == "smoke"
    dims = doc["dimensions"]
    assert all(0 <= v <= 1 for v in dims.values())
    # the weight-free dimensions of real clips are near their best
    assert dims["temporal_flickering"] > 0.95 and dims["background_consistency"] > 0.95
    assert set(doc["aggregate"]) == {"total", "quality", "semantic"}
    assert "human_action" in doc["extra"]["missing_vbench_dimensions"]
    # the fid-probe backend through the CLI entry point, with --set for the results folder
    rc = score_main(["--profile", "smoke", "--experiment", "pyramid", "--backend", "fid-probe",
                     "--set", f"results={cfg.results}"])
    fid = json.loads(cfg.layout.metrics("pyramid", "fid-probe").read_text())
    assert rc == 0 and fid["backend"] == "fid-probe" and fid["fid"] >= 0 and fid["extra"]["frames"] == 9 * T
    # noise videos under another experiment: worse flicker and a larger probe FID
    _sample_dir(cfg, "fullseq", prompts, corrupt=True)
    bad = score_experiment(cfg, "fullseq", "synthetic")
    assert bad["dimensions"]["temporal_flickering"] < dims["temporal_flickering"] - 0.2
    assert score_experiment(cfg, "fullseq", "fid-probe")["fid"] > 2 * fid["fid"]


def test_score_errors_name_the_file(probe_cfg):
    cfg = probe_cfg
    with pytest.raises(FileNotFoundError, match="samples.json"):
        score_experiment(cfg, "no_temporal_pyramid", "synthetic")
    d = cfg.layout.samples("bidirectional", cfg.eval.suite)
    d.mkdir(parents=True)
    (d / "samples.json").write_text(json.dumps({"samples": [
        {"prompt_id": "nope", "prompt": "x", "sample_index": 0, "seed": 0, "path": "x-0.mp4"}]}))
    with pytest.raises(KeyError, match="'nope' is not in suite"):
        score_experiment(cfg, "bidirectional", "synthetic")
    p = load_suite("synthetic", cfg)[0]
    (d / "samples.json").write_text(json.dumps({"samples": [
        {"prompt_id": p.id, "prompt": p.text, "sample_index": 0, "seed": 0, "path": "gone-0.mp4"}]}))
    with pytest.raises(FileNotFoundError, match="gone-0.mp4"):
        score_experiment(cfg, "bidirectional", "synthetic")
    with pytest.raises(ConfigError, match="unknown backend"):
        be.score("imagenet-fid", [], [], cfg, d)


FINAL_RESULT = (  # the layout of EvalCrafter's eval_from_metrics.py log; the paper's Table 6 metrics
    "2024-05-01 10:00:00 Metrics: {'VQA_A': 86.09, 'VQA_T': 88.31, 'IS': 18.49, 'clip_temp_score': 99.9, "
    "'warping_error': 0.0019, 'face_consistency_score': @FACE@, 'action_score': 67.58, 'motion_ac_score': 46.0, "
    "'flow_score': 1.79, 'clip_score': 20.73, 'blip_bleu': 23.29, 'sd_score': 68.26, 'detection_score': 69.55, "
    "'color_score': 47.74, 'count_score': 56.31, 'ocr_score': 68.55, 'celebrity_id_score': 44.72}\n"
    "2024-05-01 10:00:00 Results: Visual Quality @VQ@, Text-Video Alignment 57.01, Motion Quality 55.31, "
    "Temporal Consistency @TC@, Total @TOTAL@ \n")
# a stand-in for EvalCrafter's start.sh: checks its arguments and the staged videos, writes final_result.txt
FAKE_START = """#!/usr/bin/env bash
set -e
test "$1" = "$PWD"
ls "$2" > "$1/staged.txt"
mkdir -p "$1/results"
cp "$1/fixture.txt" "$1/results/final_result.txt"
"""


def _fixture(face="98.89", vq="67.94", tc="63.41", total="244"):
    return FINAL_RESULT.replace("@FACE@", face).replace("@VQ@", vq).replace("@TC@", tc).replace("@TOTAL@", total)


def test_evalcrafter_aggregate_on_table6():
    """EvalCrafter's aspect models applied to the paper's Table 6 metrics (values worked out by hand from the
    weights in EvalCrafter's eval_from_metrics.py: e.g. visual quality = 500 * (0.03004555 * 0.8609 +
    0.02887537 * 0.8831 - 0.01382558 * 0.1849 + 0.08707462696457707) = 67.94)."""
    from pyramid_repro.eval.evalcrafter import aggregate
    from pyramid_repro.report.paper import load_paper_table

    t6 = load_paper_table("table6")
    agg = aggregate(dict(zip(t6["metric"], t6["score"])))
    assert agg["visual_quality"] == pytest.approx(67.94, abs=0.01)
    assert agg["temporal_consistency"] == pytest.approx(63.41, abs=0.01)
    assert agg["total"] == pytest.approx(sum(v for k, v in agg.items() if k != "total"))
    worse = aggregate({**dict(zip(t6["metric"], t6["score"])), "Warping error": 0.05})
    assert worse["temporal_consistency"] < agg["temporal_consistency"]
    assert math.isnan(aggregate({"VQA_A": 80.0})["total"])  # unmeasured inputs never count as 0


def _sampled(folder, n=3):
    folder.mkdir(parents=True)
    recs = []
    for i in range(n):
        for k in range(2):
            name = f"prompt {i}-{k}.mp4"
            (folder / name).write_bytes(b"video")
            recs.append({"prompt_id": f"evalcrafter_{i:04d}", "prompt": f"prompt {i}", "sample_index": k,
                         "seed": 0, "path": name})
    (folder / "samples.json").write_text(json.dumps({"suite": "evalcrafter", "samples": recs}))
    return folder


def test_evalcrafter_adapter(tmp_path):
    cfg = load_config("smoke")
    videos = _sampled(tmp_path / "samples")
    with pytest.raises(ConfigError, match="eval.evalcrafter_path"):
        be.score("evalcrafter", [], [], cfg, videos)
    root = tmp_path / "EvalCrafter"
    root.mkdir()
    cfg.eval.evalcrafter_path = str(root)
    with pytest.raises(ConfigError, match="checkpoints"):
        be.score("evalcrafter", [], [], cfg, videos)
    (root / "checkpoints").mkdir()
    (root / "start.sh").write_text(FAKE_START)
    (root / "results").mkdir()
    (root / "results/final_result.txt").write_text("Metrics: {'VQA_A': 1.0}")  # a previous run: never read
    (root / "fixture.txt").write_text(_fixture())
    out = be.score("evalcrafter", [], [], cfg, videos)
    assert (root / "staged.txt").read_text().split() == ["0000.mp4", "0001.mp4", "0002.mp4"]
    assert out["extra"]["command"][0:2] == ["bash", str(root / "start.sh")]
    assert out["extra"]["n_videos"] == 3
    from pyramid_repro.report.paper import load_paper_table

    t6 = set(load_paper_table("table6")["metric"])
    assert set(TABLE6_NAMES.values()) == t6  # every EvalCrafter metric maps onto a Table 6 row
    assert out["dimensions"]["CLIP-Temp"] == 99.9 and out["dimensions"]["Warping error"] == 0.0019
    assert out["extra"]["evalcrafter_aspects_reported"] == {"visual_quality": 67.94, "text_video_alignment": 57.01,
                                                            "motion_quality": 55.31, "temporal_consistency": 63.41,
                                                            "total": 244.0}
    assert out["extra"]["evalcrafter_aspects"]["total"] == pytest.approx(243.66, abs=0.01)
    assert out["aggregate"] == {}  # EvalCrafter's scale never lands in the VBench columns of Table 1
    # nan = not measured: left out of the metrics, its aspect and the total are not checked
    (root / "fixture.txt").write_text(_fixture(face="nan", tc="nan", total="nan"))
    out = be.score("evalcrafter", [], [], cfg, videos)
    assert "Face consistency" not in out["dimensions"]
    assert "temporal_consistency" not in out["extra"]["evalcrafter_aspects_reported"]
    # a Results line that does not follow from the Metrics line is caught
    (root / "fixture.txt").write_text(_fixture(vq="60.12"))
    with pytest.raises(ValueError, match="reports visual_quality 60.12 but its own Metrics line gives 67.94"):
        be.score("evalcrafter", [], [], cfg, videos)
    (root / "start.sh").write_text("#!/usr/bin/env bash\necho 'CUDA not available' >&2\nexit 3\n")
    with pytest.raises(RuntimeError, match="(?s)exit 3.*CUDA not available"):
        be.score("evalcrafter", [], [], cfg, videos)
    with pytest.raises(FileNotFoundError, match="samples.json"):
        be.score("evalcrafter", [], [], cfg, tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("Metrics: {'VQA_X': 1.0}")
    with pytest.raises(ValueError, match="unknown EvalCrafter metric"):
        parse_final_result(bad)
    bad.write_text("nothing here")
    with pytest.raises(ValueError, match="no 'Metrics"):
        parse_final_result(bad)


def test_clean_fid_never_downloads(tmp_path, monkeypatch):
    import cleanfid.downloads_helper as dl

    monkeypatch.setattr(dl, "check_download_url", lambda *a, **k: pytest.fail("clean-fid tried to download"))
    cfg = load_config("smoke")
    clip = [np.zeros((2, 8, 8, 3), np.uint8)]
    for path in (None, str(tmp_path / "inception-2015-12-05.pt"), str(tmp_path / "other.pt")):
        cfg.eval.inception_path = path
        with pytest.raises(ConfigError, match="eval.inception_path"):
            be.score("clean-fid", clip, [], cfg, tmp_path)


def test_prompted_motion_on_ground_truth_static_and_reversed_clips():
    """Rendered ground truth moves the prompted way by the prompted distance; the same clip frozen or played
    backwards does not."""
    cfg = load_config("tiny")
    moving = [p for p in load_suite("synthetic", cfg) if p.factors["direction"] != "static"]
    assert moving
    clips = [render_clip(Factors.from_dict(p.factors), 32, 32, cfg.data.frames) for p in moving]
    truth = be.prompted_motion(clips, moving)
    assert truth["videos"] == len(moving)
    assert truth["direction_accuracy"] == 1.0 and truth["travel_score"] > 0.9
    frozen = be.prompted_motion([np.repeat(c[:1], len(c), 0) for c in clips], moving)
    assert frozen["direction_accuracy"] == 0.0 and frozen["travel_score"] < 0.05
    backwards = be.prompted_motion([c[::-1] for c in clips], moving)
    assert backwards["direction_accuracy"] == 0.0 and backwards["travel_score"] == 0.0
    static = [p for p in load_suite("synthetic", cfg) if p.factors["direction"] == "static"][:2]
    assert be.prompted_motion([clips[0], clips[0]], static) == {"videos": 0}


def test_travel_score_peaks_at_the_prompted_travel_and_punishes_overshooting():
    """The travel score is bounded and highest at exactly the prompted travel: an object that travels twice as far
    scores no better than one that does not move (a mean ratio would have scored it twice as high)."""
    r = np.array([1.0, 0.5, 1.5, 2.0, 3.0, 0.0, -1.0, np.nan])
    np.testing.assert_allclose(be.travel_score(r), [1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, np.nan])
    assert be.motion_summary([1.0, None])["travel_score"] > be.motion_summary([2.0, None])["travel_score"]
    np.testing.assert_array_equal(be.direction_hits(r), [1, 1, 1, 1, 1, 0, 0, np.nan])


def test_frechet_distance_matches_theory_and_clean_fid(monkeypatch):
    """Diagonal Gaussians have the closed form |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2; the fallback for SciPy
    without sqrtm's `disp` (clean-fid 0.1.35 passes it) gives the same number as clean-fid."""
    import cleanfid.fid

    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    theory = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert be.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(theory, rel=1e-9)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(150, 8)) * 1.5 + 0.3
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    reference = be.frechet_distance(*args)

    def no_disp(*_, **__):
        raise TypeError("sqrtm() got an unexpected keyword argument 'disp'")

    monkeypatch.setattr(cleanfid.fid, "frechet_distance", no_disp)
    assert be.frechet_distance(*args) == pytest.approx(reference, rel=1e-9)


def test_every_registered_backend_has_one_score_function():
    from pyramid_repro.backend_specs import BACKENDS

    assert set(be.SCORERS) == set(BACKENDS)
    with pytest.raises(ConfigError, match="unknown backend 'fid-prob'"):
        be.score("fid-prob", [], [], load_config("tiny"), None)
