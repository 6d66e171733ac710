"""Reports: the paper's numbers as data, the GPU-hour audit, table rendering from metrics JSON, FID speed-up."""

import json

import numpy as np
import pandas as pd
import pytest

from pyramid_repro.commands import audit as audit_command
from pyramid_repro.config import load_config
from pyramid_repro.report import audit
from pyramid_repro.report.paper import load_paper_table, paper_a100_hours
from pyramid_repro.report.convergence import convergence_speedup, first_crossing, smooth
from pyramid_repro.report.render import render_table1

def test_paper_tables_load_with_their_source():
    t1 = load_paper_table("table1")
    assert len(t1) == 11 and t1["source"].str.contains("Table 1").all()
    with pytest.raises(KeyError, match="unknown paper table"):
        load_paper_table("table9")


def test_audit_paper_arithmetic(capsys):
    pa = paper_a100_hours()
    assert pa["total"] == 20736 and pa["per_stage"] == [1536, 11520, 7680]
    assert audit_command.main(["--paper"]) == 0
    assert "20,736" in capsys.readouterr().out
    proj = audit.paper_projection(pd.DataFrame())
    assert len(proj) == 3 and (proj["projected_a100_hours"] > 0).all()


def test_table1_rows_come_from_metrics_json(tmp_path):
    cfg = load_config("smoke", {"results": str(tmp_path / "results"), "reports": str(tmp_path / "reports")})
    doc = {"backend": "synthetic", "label": "synthetic proxy (not VBench)", "experiment": "pyramid",
           "profile": "smoke", "config_hash": "abc", "commit": "x", "created_utc": "now",
           "dimensions": {"motion_smoothness": 0.98, "dynamic_degree": 0.5},
           "aggregate": {"total": 70.5, "quality": 80.25, "semantic": 31.5}, "fid": None, "n_videos": 7}
    f = tmp_path / "results" / "smoke" / "pyramid" / "metrics" / "synthetic.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(doc))
    out = tmp_path / "reports"
    out.mkdir()
    render_table1(cfg, out)
    df = pd.read_csv(out / "table1.csv")
    assert (df["section"] == "paper (VBench)").sum() == 11
    ours = df[df["model"] == "pyramid"].iloc[0]
    assert ours["backend"] == "synthetic" and "not VBench" in ours["section"]
    assert (ours["total"], ours["quality"], ours["semantic"], ours["n_videos"]) == (70.5, 80.25, 31.5, 7)
    assert ours["motion_smoothness"] == pytest.approx(98.0) and ours["dynamic_degree"] == pytest.approx(50.0)
    assert (out / "table1.pdf").stat().st_size > 1000 and "not VBench" in (out / "table1.md").read_text()


def test_table1_without_metrics_says_so(tmp_path):
    cfg = load_config("smoke", {"results": str(tmp_path / "r")})
    render_table1(cfg, tmp_path)
    assert len(pd.read_csv(tmp_path / "table1.csv")) == 11
    assert "only the paper's rows" in (tmp_path / "table1.md").read_text()


def test_convergence_speedup():
    x = np.arange(1, 11, dtype=float)
    pyr = 100.0 / x  # reaches FID 20 at x = 5
    base = 100.0 / (x / 3.0)  # the same curve three times slower: reaches 33.3 at x = 9
    r = convergence_speedup(x, base, x, pyr)
    assert r["target"] == pytest.approx(smooth(base)[-1])
    assert r["speedup"] == pytest.approx(3.0, rel=0.05)
    assert first_crossing(x, pyr, 1.0) is None
    assert convergence_speedup(x, [], x, pyr)["speedup"] is None


def test_compare_checks_shapes_and_computes_deltas(tmp_path):
    from pyramid_repro.config import ConfigError
    from pyramid_repro.report.compare import check_compatible, compare

    cfg = load_config("smoke", {"results": str(tmp_path / "r"), "reports": str(tmp_path / "rep")})
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps({"in_channels": 16, "patch_size": 1}))
    with pytest.raises(ConfigError, match="in_channels=16 .*vae.latent_channels=4"):
        check_compatible(ck, cfg)
    (ck / "config.json").write_text(json.dumps({"in_channels": 4, "patch_size": 1}))
    ours = {"backend": "synthetic", "aggregate": {"total": 60.0, "quality": 70.0, "semantic": 20.0}, "fid": None}
    f = tmp_path / "r" / "smoke" / "pyramid" / "metrics" / "synthetic.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(ours))
    calls = []
    table = compare(cfg, ck, "synthetic", "new",
                    sample_fn=lambda c, p, out: calls.append(("sample", p)),
                    score_fn=lambda c, v, b, out: {"backend": b, "aggregate": {"total": 65.0, "quality": 71.0,
                                                                               "semantic": 45.0}, "fid": None})
    assert calls == [("sample", ck)]
    delta = table[table["model"].str.startswith("Δ new − pyramid")].iloc[0]
    assert (delta["total"], delta["quality"], delta["semantic"]) == (5.0, 1.0, 25.0)
    assert not table["model"].str.contains("− paper").any()  # a proxy is never differenced against VBench
    assert (tmp_path / "rep" / "smoke" / "compare_new.csv").is_file()  # smoke: not the default profile


def test_compare_on_the_pyramid_checkpoint_reproduces_its_row(smoke_run):
    """`compare` with this run's own pyramid checkpoint gives the pyramid row of table1 again."""
    from pyramid_repro.report.compare import compare

    res = smoke_run / "results"
    cfg = load_config("smoke", {"results": str(res), "reports": str(smoke_run / "compare_reports")})
    ck = res / "smoke" / "pyramid" / "dit" / cfg.train.curriculum[-1].name / "final"
    table = compare(cfg, ck, "synthetic", "own_pyramid")
    ours = json.loads((res / "smoke" / "pyramid" / "metrics" / "synthetic.json").read_text())
    new = table[table["model"] == "own_pyramid"].iloc[0]
    for k in ("total", "quality", "semantic"):
        assert new[k] == pytest.approx(ours["aggregate"][k], abs=1e-9)
    delta = table[table["model"].str.startswith("Δ own_pyramid − pyramid")].iloc[0]
    assert abs(delta["total"]) < 1e-9


def test_compare_on_the_fullseq_checkpoint_uses_its_own_method(smoke_run):
    """Issue 30: `compare` with no options samples the fullseq checkpoint as it was trained (one stage,
    bidirectional, from its train_config.yaml) and scores what the workflow's table says; naming the wrong
    experiment is refused with both values."""
    from pyramid_repro.config import ConfigError
    from pyramid_repro.report.compare import compare

    res = smoke_run / "results"
    over = {"results": str(res), "reports": str(smoke_run / "compare_reports")}
    cfg = load_config("smoke", over)
    ck = res / "smoke" / "fullseq" / "dit" / cfg.train.curriculum[-1].name / "final"
    table = compare(cfg, ck, "synthetic", "own_fullseq")
    theirs = json.loads((res / "smoke" / "fullseq" / "metrics" / "synthetic.json").read_text())
    new = table[table["model"] == "own_fullseq"].iloc[0]
    for k in ("total", "quality", "semantic"):
        assert new[k] == pytest.approx(theirs["aggregate"][k], abs=1e-9)
    assert new["method"].startswith("fullseq: 1 stage, bidirectional attention")
    with pytest.raises(ConfigError, match=r"pyramid.stages=1.*--experiment pyramid asks for pyramid.stages=3"):
        compare(load_config("smoke", over, "pyramid"), ck, "synthetic", "wrong", experiment="pyramid")


def _brightness(videos, prompts, cfg, video_dir):
    """A toy backend as docs/howto.md §2 adds one: each video's mean brightness in [0, 1], neither VBench-like nor
    an FID."""
    b = np.array([v.mean() / 255.0 for v in videos])
    return {"dimensions": {"brightness": float(b.mean())}, "aggregate": {}, "fid": None, "extra": {},
            "units": {"brightness": b}}


def test_a_backend_that_is_neither_vbench_like_nor_an_fid_is_seen_in_the_reports(tmp_path, monkeypatch):
    """A backend registered as docs/howto.md §2 says, with a per-video statistic only, is shown in the
    ablations report with its interval and its paired difference to pyramid; Tables 1 and 5 give it no empty row
    or column and say where it is."""
    from pyramid_repro import backend_specs
    from pyramid_repro.data.video_io import write_video
    from pyramid_repro.eval import backends
    from pyramid_repro.eval.prompts import load_suite
    from pyramid_repro.eval.score import score_experiment
    from pyramid_repro.report.render import render_ablations, render_table5

    spec = backend_specs.BackendSpec("toy-brightness", "mean brightness (toy)", "frames")
    monkeypatch.setitem(backend_specs.BACKENDS, spec.name, spec)
    monkeypatch.setitem(backends.SCORERS, spec.name, _brightness)
    cfg = load_config("smoke", {"results": str(tmp_path / "results"), "experiments": ["pyramid", "fullseq"],
                                "eval": {"backends": ["synthetic", spec.name]}})
    prompts = load_suite(cfg.eval.suite, cfg, limit=True)
    rng = np.random.default_rng(0)
    for experiment, level in (("pyramid", 100), ("fullseq", 160)):  # fullseq's videos are brighter
        folder = cfg.layout.samples(experiment, cfg.eval.suite)
        folder.mkdir(parents=True)
        samples = []
        for i, p in enumerate(prompts * 3):
            name = f"{p.id}-{i}.mp4"
            write_video(folder / name, rng.integers(level - 20, level + 20, (3, 16, 16, 3), dtype=np.uint8), fps=8)
            samples.append({"prompt_id": p.id, "sample_index": i, "path": name})
        (folder / "samples.json").write_text(json.dumps({"samples": samples}))
        doc = score_experiment(cfg, experiment, spec.name)
        assert doc["label"] == spec.label and doc["units_file"]
    out = tmp_path / "reports"
    out.mkdir()
    render_table1(cfg, out)
    render_table5(cfg, out)
    render_ablations(cfg, out)
    col = f"brightness ({spec.name})"
    abl = pd.read_csv(out / "ablations.csv").set_index("experiment")
    assert abl.loc["fullseq", col] == pytest.approx(160 / 255, abs=0.02)
    assert abl.loc["fullseq", f"{col} lo"] < abl.loc["fullseq", col] < abl.loc["fullseq", f"{col} hi"]
    assert abl.loc["fullseq", f"Δ {col}"] == pytest.approx(60 / 255, abs=0.02)
    assert abl.loc["fullseq", f"Δ {col} paired"] and abl.loc["fullseq", f"Δ {col} separated"]
    assert 0 < abl.loc["fullseq", f"Δ {col} lo"] < abl.loc["fullseq", f"Δ {col} hi"]
    # no all-empty row in Table 1, no empty column in Table 5; both say where the backend's numbers are
    assert spec.name not in set(pd.read_csv(out / "table1.csv")["backend"])
    assert not any(spec.name in c for c in pd.read_csv(out / "table5.csv").columns)
    assert f"{spec.name} ({spec.label})" in (out / "table1.md").read_text()
    assert "ablations report" in (out / "table1.md").read_text()
