"""VBench: aggregation reproduces Table 1 from Table 5 (docs/method.md §8) with VBench's own constants, and the
official runner is built correctly (weights from eval.vbench_weights, a folder holding only videos, results JSON
in VBench's layout parsed, clear errors)."""

import json
import math

import pytest

from pyramid_repro.config import ConfigError, load_config, replication_dir
from pyramid_repro.eval import vbench as vb

# Table 5 of the paper (raw VBench percentages, 16 dimensions), typed in here independently of the CSV the report
# reads, so a typo in either shows up.
TABLE5 = {"subject_consistency": 96.95, "background_consistency": 98.06, "temporal_flickering": 99.49,
          "motion_smoothness": 99.12, "dynamic_degree": 64.63, "aesthetic_quality": 63.26,
          "imaging_quality": 65.01, "object_class": 86.67, "multiple_objects": 50.71, "human_action": 85.60,
          "color": 82.87, "spatial_relationship": 59.53, "scene": 43.20, "appearance_style": 20.91,
          "temporal_style": 23.09, "overall_consistency": 26.23}


def test_table5_gives_table1_total_quality_semantic():
    agg = vb.aggregate({d: s / 100 for d, s in TABLE5.items()})
    # Table 1 (to 0.01) and the unrounded values of docs/method.md §8 (84.746 is printed as 84.74 in Table 1)
    assert agg["total"] == pytest.approx(81.72, abs=0.01) and agg["total"] == pytest.approx(81.721, abs=5e-4)
    assert agg["quality"] == pytest.approx(84.74, abs=0.01) and agg["quality"] == pytest.approx(84.746, abs=5e-4)
    assert agg["semantic"] == pytest.approx(69.62, abs=0.01) and agg["semantic"] == pytest.approx(69.619, abs=5e-4)
    assert agg["missing"] == []


def test_table5_csv_matches_the_typed_table():
    from pyramid_repro.report.paper import load_paper_table

    t5 = load_paper_table("table5")
    assert {r.dimension: r.score for r in t5.itertuples()} == pytest.approx(TABLE5)


def test_constants_are_vbenchs():
    # VBench scripts/constant.py (NORMALIZE_DIC, DIM_WEIGHT, QUALITY/SEMANTIC lists, weights 4:1)
    assert len(vb.QUALITY) == 7 and len(vb.SEMANTIC) == 9 and set(vb.QUALITY).isdisjoint(vb.SEMANTIC)
    assert vb.NORMALIZE["motion_smoothness"] == (0.706, 0.9975)
    assert vb.NORMALIZE["appearance_style"] == (0.0009, 0.2855)
    assert vb.NORMALIZE["scene"] == (0.0, 0.8222)
    assert vb.WEIGHTS["dynamic_degree"] == 0.5 and sum(vb.WEIGHTS.values()) == 15.5
    assert (vb.QUALITY_WEIGHT, vb.SEMANTIC_WEIGHT) == (4.0, 1.0)
    # the dimension names are exactly those of VBench's full-info prompt suite
    info = json.loads((replication_dir() / "prompts/vbench/VBench_full_info.json").read_text())
    assert {d for p in info for d in p["dimension"]} == set(vb.VBENCH_DIMENSIONS)


def test_aggregate_hand_computed_and_partial():
    # all at Max -> 100; all at Min -> 0 (normalisation is affine per dimension)
    top = vb.aggregate({d: hi for d, (lo, hi) in vb.NORMALIZE.items()})
    bottom = vb.aggregate({d: lo for d, (lo, hi) in vb.NORMALIZE.items()})
    assert top["total"] == pytest.approx(100) and bottom["total"] == pytest.approx(0)
    # subset: quality from flicker (normalised 0.5) and dynamic degree 1.0 at weight 0.5 -> (0.5 + 0.5) / 1.5
    mid = (0.6293 + 1.0) / 2
    part = vb.aggregate({"temporal_flickering": mid, "dynamic_degree": 1.0})
    assert part["quality"] == pytest.approx(100 * 1.0 / 1.5) and part["semantic"] is None
    assert part["total"] == part["quality"] and "color" in part["missing"]
    with pytest.raises(ValueError, match="divide percentages by 100"):
        vb.aggregate({"scene": 43.2})
    with pytest.raises(ValueError, match="unknown VBench dimension"):
        vb.aggregate({"colour": 0.5})


def _env(tmp_path):
    cfg = load_config("smoke")
    py = tmp_path / "envpy"
    py.write_text("")
    (tmp_path / "weights").mkdir()
    cfg.eval.vbench_env, cfg.eval.vbench_weights = str(py), str(tmp_path / "weights")
    return cfg


def test_runner_errors_name_the_missing_piece(tmp_path):
    cfg = load_config("smoke")
    info = tmp_path / "info.json"
    with pytest.raises(ConfigError, match="eval.vbench_env is not set"):
        vb.vbench_command(cfg, tmp_path, tmp_path / "o", info)
    cfg.eval.vbench_env = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no such python"):
        vb.vbench_command(cfg, tmp_path, tmp_path / "o", info)
    (tmp_path / "py").write_text("")
    cfg.eval.vbench_env = str(tmp_path / "py")
    with pytest.raises(ConfigError, match="eval.vbench_weights"):
        vb.vbench_env(cfg)
    cfg = _env(tmp_path)
    with pytest.raises(ValueError, match="unknown VBench dimension"):
        vb.vbench_command(cfg, tmp_path, tmp_path / "o", info, dimensions=["colour"])


def test_runner_command_env_and_staging(tmp_path):
    cfg = _env(tmp_path)
    info = replication_dir() / "prompts/vbench/VBench_full_info.json"
    cmd = vb.vbench_command(cfg, tmp_path / "o/videos", tmp_path / "o", info)
    assert cmd[0] == cfg.eval.vbench_env and cmd[1] == "-c"
    assert "local=True" in cmd[2] and "mode='vbench_standard'" in cmd[2] and "name='results'" in cmd[2]
    compile(cmd[2], "<vbench>", "exec")  # the inline script is valid Python
    assert cmd[3] == str(info) and json.loads(cmd[5]) == vb.VBENCH_DIMENSIONS and cmd[6] == str(tmp_path / "o/videos")
    assert vb.vbench_env(cfg) == {"VBENCH_CACHE_DIR": str((tmp_path / "weights").resolve())}
    assert vb.results_path(tmp_path / "o") == tmp_path / "o/results_eval_results.json"
    # staging: only the videos, as links, so VBench's "suffix of the first listed file" is .mp4
    src = tmp_path / "samples"
    src.mkdir()
    (src / "samples.json").write_text("{}")
    for name in ("a cat-0.mp4", "a cat-1.mp4"):
        (src / name).write_bytes(b"x")
    assert vb.stage_videos(src, tmp_path / "o/videos") == 2
    assert sorted(p.name for p in (tmp_path / "o/videos").iterdir()) == ["a cat-0.mp4", "a cat-1.mp4"]
    assert vb.missing_videos(src, info, 1)  # 946 prompts wanted, one present
    with pytest.raises(FileNotFoundError, match="VBench standard-suite videos missing"):
        vb.run_vbench(cfg, src, tmp_path / "o", info)
    with pytest.raises(FileNotFoundError, match="no .mp4"):
        vb.stage_videos(tmp_path / "weights", tmp_path / "o2")


def test_parse_vbench_results_fixture(tmp_path):
    # VBench 0.1.5 writes {dimension: [mean over videos, [{"video_path", "video_results"}, ...]]}
    res = tmp_path / "results_eval_results.json"
    per_video = [{"video_path": "x-0.mp4", "video_results": 0.97}, {"video_path": "x-1.mp4", "video_results": 0.96}]
    res.write_text(json.dumps({"subject_consistency": [0.965, per_video], "dynamic_degree": [0.5, [
        {"video_path": "x-0.mp4", "video_results": True}, {"video_path": "x-1.mp4", "video_results": False}]]}))
    scores = vb.parse_results(res)
    assert scores == {"subject_consistency": 0.965, "dynamic_degree": 0.5}
    agg = vb.aggregate(scores)
    assert math.isclose(agg["quality"], 100 * (1.0 * (0.965 - 0.1462) / (1 - 0.1462) + 0.5 * 0.5) / 1.5)
    res.write_text(json.dumps({"colour": [0.5, []]}))
    with pytest.raises(ValueError, match="unknown VBench dimension 'colour'"):
        vb.parse_results(res)
    res.write_text(json.dumps({"color": ["n/a", []]}))
    with pytest.raises(ValueError, match="no numeric mean"):
        vb.parse_results(res)
    with pytest.raises(FileNotFoundError, match="VBench results file not found"):
        vb.parse_results(tmp_path / "missing.json")


def _fake_vbench_env(tmp_path):
    """A fake VBench environment: an executable standing in for its python, which answers the version query
    and, for a run, records the script it was given and writes VBench's results file."""
    import stat
    import sys

    py = tmp_path / "fake_python"
    py.write_text(f"""#!{sys.executable}
import json, sys
from pathlib import Path
script = sys.argv[2]
if "importlib.metadata" in script:
    print("0.1.5")
    sys.exit(0)
out = Path(sys.argv[4])
out.mkdir(parents=True, exist_ok=True)
(out / "script.txt").write_text(script)
dims = json.loads(sys.argv[5])
(out / "results_eval_results.json").write_text(json.dumps({{d: [0.9, []] for d in dims}}))
""")
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "weights").mkdir()
    cfg = load_config("smoke")
    cfg.eval.vbench_env, cfg.eval.vbench_weights = str(py), str(tmp_path / "weights")
    return cfg


@pytest.mark.parametrize("mode", ["standard", "long"])
def test_vbench_modes_and_recorded_protocol(tmp_path, mode, monkeypatch):
    from pyramid_repro.eval.backends import _score_vbench

    cfg = _fake_vbench_env(tmp_path)
    cfg.eval.vbench_mode = mode
    cfg.eval.samples_per_prompt = 1
    cmd = vb.vbench_command(cfg, tmp_path / "o/videos", tmp_path / "o", tmp_path / "info.json")
    compile(cmd[2], "<vbench>", "exec")
    if mode == "long":
        assert "from vbench2_beta_long import VBenchLong" in cmd[2] and "mode='long_vbench_standard'" in cmd[2]
    else:
        assert "from vbench import VBench;" in cmd[2] and "mode='vbench_standard'" in cmd[2]
    # a full run in the fake environment: two prompts, the samples' protocol as `sample` writes it
    info = tmp_path / "info.json"
    info.write_text(json.dumps([{"prompt_en": "a cat", "dimension": ["color"]},
                                {"prompt_en": "a dog", "dimension": ["scene"]}]))
    videos = tmp_path / "samples"
    videos.mkdir()
    for name in ("a cat-0.mp4", "a dog-0.mp4"):
        (videos / name).write_bytes(b"x")
    made = {"fps": 24, "frames": 121, "height": 768, "width": 1280, "prompt_set": "standard",
            "prompt_suffix": ", hyper quality, Ultra HD, 8K"}
    (videos / "samples.json").write_text(json.dumps({"samples": [], "protocol": made}))
    scores = vb.run_vbench(cfg, videos, tmp_path / "run", info)
    assert scores == {d: 0.9 for d in vb.VBENCH_DIMENSIONS}
    ran = (tmp_path / "run" / "script.txt").read_text()
    assert ("VBenchLong" in ran) == (mode == "long")
    proto = vb.vbench_protocol(cfg, videos)
    assert proto == {"vbench_version": "0.1.5", "vbench_mode": mode, **made}
    # the backend puts it into the metrics JSON (eval/score.py merges the backend's result into the doc)
    import pyramid_repro.eval.backends as backends

    (tmp_path / "repl/prompts/vbench").mkdir(parents=True)
    (tmp_path / "repl/prompts/vbench/VBench_full_info.json").write_text(info.read_text())
    monkeypatch.setattr(backends, "replication_dir", lambda: tmp_path / "repl")
    res = _score_vbench([], [], cfg, videos)
    assert res["protocol"]["vbench_mode"] == mode and res["protocol"]["fps"] == 24
    assert res["protocol"]["frames"] == 121 and (res["protocol"]["width"], res["protocol"]["height"]) == (1280, 768)
    assert res["protocol"]["vbench_version"] == "0.1.5" and res["protocol"]["prompt_set"] == "standard"
