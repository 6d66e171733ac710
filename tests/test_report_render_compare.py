"""tables from metrics JSON, FID speed-up functions, ablation frames, checkpoint comparison with fakes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyramid_repro.commands import report as report_command
from pyramid_repro.config import ConfigError, for_experiment, load_config, save_config
from pyramid_repro.report import render
from pyramid_repro.report.convergence import convergence_speedup, describe, smooth, speedup_table
from fid_helpers import write_fid_run


def _cfg(tmp_path: Path):
    return load_config("smoke", {"results": str(tmp_path / "results"), "reports": str(tmp_path / "reports")})


def _metrics(tmp_path: Path, experiment: str, backend: str, **kw) -> dict:
    doc = {"backend": backend, "label": kw.pop("label", backend), "experiment": experiment, "profile": "smoke",
           "config_hash": "h", "commit": "c", "created_utc": "t", "dimensions": {}, "aggregate": {}, "fid": None,
           "n_videos": 4, "extra": {}} | kw
    f = tmp_path / "results" / "smoke" / experiment / "metrics" / f"{backend}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(doc))
    return doc


def test_table1_csv_rows_equal_their_metrics_json(tmp_path):
    cfg = _cfg(tmp_path)
    docs = [_metrics(tmp_path, "pyramid", "synthetic", label="synthetic proxy (not VBench)",
                     dimensions={"motion_smoothness": 0.9912, "dynamic_degree": 0.25, "color": 0.5},
                     aggregate={"total": 61.25, "quality": 70.0, "semantic": 26.25}),
            _metrics(tmp_path, "pyramid", "fid-probe", fid=123.5, n_videos=8),
            _metrics(tmp_path, "fullseq", "synthetic", label="synthetic proxy (not VBench)",
                     aggregate={"total": 55.0, "quality": 60.0, "semantic": 35.0})]
    out = tmp_path / "reports"
    out.mkdir()
    render.render_table1(cfg, out)
    df = pd.read_csv(out / "table1.csv")
    assert len(df) == 11 + len(docs)
    for d in docs:
        r = df[(df["model"] == d["experiment"]) & (df["backend"] == d["backend"])]
        assert len(r) == 1, d
        r = r.iloc[0]
        for k in ("total", "quality", "semantic"):
            assert r[k] == pytest.approx(d["aggregate"][k]) if k in d["aggregate"] else pd.isna(r[k])
        assert (r["fid"] == pytest.approx(d["fid"])) if d["fid"] is not None else pd.isna(r["fid"])
        assert r["n_videos"] == d["n_videos"] and r["section"].startswith("this run")
        assert not r["backend"].startswith("vbench")  # a proxy is never labelled as VBench
    syn = df[(df["model"] == "pyramid") & (df["backend"] == "synthetic")].iloc[0]
    assert syn["motion_smoothness"] == pytest.approx(99.12) and syn["dynamic_degree"] == pytest.approx(25.0)
    md = (out / "table1.md").read_text()
    assert "not VBench" in md and "profile smoke" in md and "commit" in md


def test_table5_and_table6_columns(tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "reports"
    out.mkdir()
    assert render.render_table6(cfg, out) is None  # no EvalCrafter metrics: no table6
    _metrics(tmp_path, "pyramid", "synthetic", dimensions={"color": 0.75})
    _metrics(tmp_path, "pyramid", "evalcrafter", dimensions={"VQA_A": 50.5, "Flow score": 2.5})
    render.render_table5(cfg, out)
    t5 = pd.read_csv(out / "table5.csv").set_index("dimension")
    assert t5.loc["color", "pyramid (synthetic)"] == pytest.approx(75.0) and t5.loc["color", "paper"] == 82.87
    assert pd.isna(t5.loc["scene", "pyramid (synthetic)"])
    assert render.render_table6(cfg, out).is_file()
    t6 = pd.read_csv(out / "table6.csv").set_index("metric")
    assert t6.loc["VQA_A", "pyramid (evalcrafter)"] == 50.5 and t6.loc["VQA_A", "paper"] == 86.09
    assert pd.isna(t6.loc["IS", "pyramid (evalcrafter)"])


def test_metrics_json_without_backend_is_an_error(tmp_path):
    f = tmp_path / "results" / "smoke" / "pyramid" / "metrics" / "x.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"experiment": "pyramid"}))
    with pytest.raises(ValueError, match="x.json: metrics JSON lacks .*backend"):
        render.load_metrics(_cfg(tmp_path))


def test_speedup_of_a_curve_three_times_slower():
    x = np.linspace(1, 30, 30)
    pyr = 10 + 100 / x
    base = 10 + 100 / (x / 3)  # identical curve, three times as much compute for every FID
    r = convergence_speedup(x, base, x, pyr, "common")
    assert r["speedup"] == pytest.approx(3.0, rel=0.03)
    best = convergence_speedup(x, base, x, pyr, "pyramid_best")  # baseline never reaches the pyramid's best
    assert best["speedup"] is None and best["reason"] == "not reached by baseline"
    assert best["lower_bound"] == pytest.approx(30 / 30) and "censored" in describe(best)
    assert convergence_speedup(x, pyr, x, pyr)["speedup"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target must be"):
        convergence_speedup(x, base, x, pyr, "best")


def test_smoothing_is_monotone_and_rejects_nan():
    y = np.array([50, 40, 45, 30, 35, 20, 25.0])
    s = smooth(y)
    assert np.all(np.diff(s) <= 0) and s[-1] <= y.min() + 5
    with pytest.raises(ValueError, match="NaN"):
        smooth([1.0, np.nan])


def test_speedup_table_and_fid_report(tmp_path):
    cfg = _cfg(tmp_path)
    x = np.arange(1, 11, dtype=float)
    for name, slow in (("pyramid", 1.0), ("fullseq", 2.0), ("no_corrective_noise", 1.5)):
        f = tmp_path / "results" / "smoke" / name / "fid_curve.csv"
        f.parent.mkdir(parents=True)
        pd.DataFrame({"step": x, "samples_seen": 4 * x, "tokens_seen": 100 * x, "flops": 1e9 * x,
                      "device_hours": x / 3600, "fid": 10 + 100 / (x / slow), "backend": "fid-probe"}).to_csv(
            f, index=False)
    curves = render.load_fid_curves(cfg)
    t = speedup_table(curves)
    assert set(t["axis"]) == {"step", "samples_seen", "flops", "device_hours"}
    common = t[t["target_kind"] == "common"]
    assert common["speedup"].to_numpy() == pytest.approx(2.0, rel=0.05)
    out = tmp_path / "reports"
    out.mkdir()
    # curves without their points' features: the speed-up (on the features' plug-in FIDs) is not stated, and the
    # report says what is missing
    assert render.render_fid(cfg, out).stat().st_size > 1000
    text = (out / "fid_convergence.txt").read_text()
    assert text.startswith("speed-up: needs") and "no units_file" in text


def test_ablation_frames_from_sample_videos(tmp_path):
    from pyramid_repro.data.video_io import write_video

    cfg = _cfg(tmp_path)
    d = tmp_path / "results" / "smoke" / "fullseq" / "samples" / cfg.eval.suite
    d.mkdir(parents=True)
    frames = np.zeros((9, 16, 16, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(9)[:, None, None] * 20
    write_video(d / "a.mp4", frames, 8)
    grid = render.sample_frames(cfg, "fullseq")
    assert grid.shape == (16, 6 * 16, 3)
    assert grid[0, ::16, 0].tolist() == [20 * i for i in (0, 2, 3, 5, 6, 8)]  # evenly spaced of 9, lossless
    assert render.sample_frames(cfg, "pyramid") is None
    _metrics(tmp_path, "pyramid", "synthetic", aggregate={"total": 60.0})
    _metrics(tmp_path, "fullseq", "synthetic", aggregate={"total": 50.0})
    out = tmp_path / "reports"
    out.mkdir()
    render.render_ablations(cfg, out)
    abl = pd.read_csv(out / "ablations.csv").set_index("experiment")
    assert abl.loc["fullseq", "Δ total (synthetic)"] == -10.0


def test_report_command_with_zero_metrics(tmp_path, capsys):
    argv = ["--profile", "smoke", "--set", f"results={tmp_path / 'r'}", "--out", str(tmp_path)]
    assert report_command.main(argv) == 0
    assert {"table1.pdf", "table1.csv", "table1.md", "table5.pdf", "gpu_hours.pdf"} <= {
        p.name for p in tmp_path.iterdir()}
    assert "only the paper's rows" in (tmp_path / "table1.md").read_text()


def test_compare_train_config_mismatch_names_the_key(tmp_path):
    from pyramid_repro.report.compare import check_compatible

    cfg = _cfg(tmp_path)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps({"in_channels": cfg.vae.latent_channels,
                                                "patch_size": cfg.model.patch_size}))
    save_config(cfg, ck / "train_config.yaml")
    check_compatible(ck, cfg)
    other = load_config("smoke", {"model": {"depth": cfg.model.depth + 1}})
    save_config(other, ck / "train_config.yaml")
    with pytest.raises(ConfigError, match=rf"model.depth={cfg.model.depth + 1} but profile 'smoke' has "
                                          rf"model.depth={cfg.model.depth}"):
        check_compatible(ck, cfg)
    with pytest.raises(ConfigError, match="no config.json"):
        check_compatible(tmp_path, cfg)


def test_compare_vbench_deltas_to_paper_and_pyramid(tmp_path):
    from pyramid_repro.report.compare import compare

    cfg = _cfg(tmp_path)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps({"in_channels": cfg.vae.latent_channels}))
    _metrics(tmp_path, "pyramid", "vbench", aggregate={"total": 80.0, "quality": 83.0, "semantic": 68.0})
    seen = {}

    def fake_sample(c, ckpt, out):
        seen["sample"] = (ckpt, out)
        return out

    def fake_score(c, videos, backend, out):
        seen["score"] = (videos, backend)
        return {"backend": backend, "aggregate": {"total": 82.72, "quality": 85.74, "semantic": 70.62}, "fid": None}

    t = compare(cfg, ck, "vbench", "new", sample_fn=fake_sample, score_fn=fake_score).set_index("model")
    assert seen["sample"][0] == ck and seen["score"] == (seen["sample"][1], "vbench")
    dp = t.loc["Δ new − paper"]
    assert (dp["total"], dp["quality"], dp["semantic"]) == pytest.approx((1.0, 1.0, 1.0))  # vs 81.72/84.74/69.62
    do = t.loc["Δ new − pyramid (this run)"]
    assert (do["total"], do["quality"], do["semantic"]) == pytest.approx((2.72, 2.74, 2.62))
    assert (tmp_path / "reports" / "smoke" / "compare_new.pdf").stat().st_size > 1000


def test_speedup_restricted_to_one_stage():
    x = np.arange(1, 9, dtype=float)
    stage = ["image"] * 4 + ["video"] * 4
    # both start the video stage worse than they ended the image stage; in the video stage fullseq is 2x slower
    pyr = pd.DataFrame({"step": x, "fid": [9, 8, 7, 6, 50, 30, 20, 10.0], "stage": stage})
    full = pd.DataFrame({"step": x, "fid": [9, 8, 7, 6, 50, 45, 30, 20.0], "stage": stage})
    t = speedup_table({"pyramid": pyr, "fullseq": full}, axes=("step",), stage="video", k=1)
    common = t[t["target_kind"] == "common"].iloc[0]
    assert common["stage"] == "video" and common["target"] == 20.0
    assert common["speedup"] == pytest.approx(8 / 7)
    with pytest.raises(ValueError, match="no `stage` column"):
        speedup_table({"pyramid": pyr.drop(columns="stage"), "fullseq": full}, stage="video")


def test_fid_report_compares_multi_stage_curves_within_the_claims_stage(tmp_path):
    """Curves spanning the curriculum give no cross-stage ('[all]') speed-up: FID changes meaning between stages.
    The speed-up is read in the stage the spatial-pyramid claim names (replication/claims.yaml: image)."""
    cfg = _cfg(tmp_path)
    last = cfg.train.curriculum[0].name
    assert last == "image"
    stage = [last] * 4 + [cfg.train.curriculum[-1].name] * 4
    write_fid_run(cfg, {"pyramid": [1.5, 1.2, 1.0, 0.8, 3.0, 2.0, 1.5, 1.0],
                        "fullseq": [1.5, 1.3, 1.1, 1.0, 3.0, 2.5, 2.0, 1.5]}, {"pyramid": 1.0, "fullseq": 1.0}, stage)
    out = tmp_path / "reports"
    out.mkdir()
    render.render_fid(cfg, out)
    t = pd.read_csv(out / "fid_convergence.csv")
    assert set(t["stage"]) == {last}
    lines = (out / "fid_convergence.txt").read_text().splitlines()
    assert lines and all(ln.startswith(f"[{last}]") for ln in lines)


def test_table1_notes_metrics_of_another_config(tmp_path):
    cfg = _cfg(tmp_path)
    _metrics(tmp_path, "pyramid", "synthetic", label="synthetic proxy (not VBench)", config_hash="0ld",
             aggregate={"total": 1.0})
    out = tmp_path / "reports"
    out.mkdir()
    render.render_table1(cfg, out)
    md = (out / "table1.md").read_text()
    assert "another config" in md and "pyramid/synthetic: config 0ld" in md
    assert "synthetic = synthetic proxy (not VBench)" in md


def test_config_footnote_fires_only_on_a_mismatch_that_changes_what_was_measured(tmp_path):
    from pyramid_repro.provenance import measured_hash

    cfg = _cfg(tmp_path)
    run = for_experiment(cfg, "fullseq")
    # the job ran on another device and under another experiment selection: same measurement
    other_compute = load_config("smoke", {"compute": {"device": "cpu", "cpus_per_job": 3},
                                          "experiments": ["pyramid", "fullseq"]}, "fullseq")
    doc = {"experiment": "fullseq", "backend": "synthetic", "config_hash": other_compute.config_hash(),
           "provenance": {"measured_hash": measured_hash(other_compute)}}
    assert other_compute.config_hash() != run.config_hash()
    assert render.metrics_provenance([doc], cfg) == ""
    # another number of sampling steps changes what was measured
    changed = load_config("smoke", {"pyramid": {"sampler": {"steps_first_frame": [3, 3, 3]}}}, "fullseq")
    doc["provenance"]["measured_hash"] = measured_hash(changed)
    assert "fullseq/synthetic" in render.metrics_provenance([doc], cfg)
    # a JSON from before measured_hash is compared on the whole hash of its experiment's config
    assert render.metrics_provenance([{"experiment": "fullseq", "backend": "synthetic",
                                       "config_hash": run.config_hash()}], cfg) == ""
