"""Issue G: the paper's numbers as data (checked against PAPER.md) and the GPU-hour audit's arithmetic."""

import re
from pathlib import Path

import pandas as pd
import pytest

from pyramid_repro.config import load_config
from pyramid_repro.report import audit
from pyramid_repro.report.paper import TABLES, load_paper_table

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "PAPER.md"
needs_paper = pytest.mark.skipif(not PAPER.is_file(), reason="PAPER.md not beside the repository")


def test_every_table_has_a_source_column():
    for name in TABLES:
        df = load_paper_table(name)
        assert "source" in df.columns and df["source"].str.contains("2410.05954").all(), name
    with pytest.raises(KeyError, match="unknown paper table 'table2'.*table1"):
        load_paper_table("table2")


@needs_paper
def test_table1_rows_equal_paper_md():
    text = PAPER.read_text()
    t1 = load_paper_table("table1")
    assert len(t1) == 11
    for r in t1.itertuples():
        row = (f"| {r.model} | {r.total:.2f} | {r.quality:.2f} | {r.semantic:.2f} | {r.motion_smoothness:.2f} | "
               f"{r.dynamic_degree:.2f} | {r.public_data} |")
        assert row in text, row


@needs_paper
def test_table4_5_6_and_speed_equal_paper_md():
    text = PAPER.read_text().replace("\n", " ")
    for r in load_paper_table("table4").itertuples():
        assert f"| {r.stage} | {r.data} | {r.steps // 1000}k | {r.batch} | {r.hours} | {r.a100_hours:,} |" in text
    for r in load_paper_table("table5").itertuples():
        m = re.search(rf"{r.dimension.replace('_', ' ')} ([0-9.]+)", text)
        assert m and float(m.group(1).rstrip(".")) == r.score, r.dimension
    t6 = load_paper_table("table6")
    assert len(t6) == 17
    for r in t6.itertuples():
        m = re.search(rf"{re.escape(r.metric)} ([0-9.]+)", text)
        assert m and float(m.group(1).rstrip(".")) == r.score, r.metric
    speed = load_paper_table("speed").set_index("setting")["seconds_per_video"]
    assert "about 56 s for a 5 s 384p video" in text and speed["5 s 384p"] == 56
    assert "about 5.5 min for a 5 s 768p video" in text and speed["5 s 768p"] == 5.5 * 60


def test_audit_paper_prints_20736_per_stage(capsys):
    assert audit.main(["--paper"]) == 0
    out = capsys.readouterr().out
    assert "20,736" in out and "11520" in out and ">40k" in out and "2,304" in out


def _ledger(path: Path, rows: list[dict]) -> None:
    from pyramid_repro.train.ledger import LEDGER_FIELDS

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{k: r.get(k, 0) for k in LEDGER_FIELDS} for r in rows]).to_csv(path, index=False)


def test_audit_sums_ledgers_per_experiment_stage_and_device(tmp_path, capsys):
    res = tmp_path / "results" / "smoke"
    base = {"device_name": "CPU", "device_count": 1, "nodes": 1, "profile": "smoke", "status": "ok"}
    _ledger(res / "vae" / "ledger.csv", [base | {"experiment": "vae", "stage": "vae", "wall_seconds": 36.0,
                                                 "device_hours": 0.01, "steps": 20}])
    # a resumed stage: two rows that must be summed
    _ledger(res / "pyramid" / "dit" / "image" / "ledger.csv", [
        base | {"experiment": "pyramid", "stage": "image", "wall_seconds": 18.0, "device_hours": 0.005,
                "steps": 5, "tokens": 1000, "flops": 2.0e9},
        base | {"experiment": "pyramid", "stage": "image", "wall_seconds": 54.0, "device_hours": 0.015,
                "steps": 15, "tokens": 3000, "flops": 6.0e9, "resumed_from_step": 5}])
    bench = res / "benchmarks" / "train_vae.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                     "11.04\t0:00:11\t824.23\t3703.05\t470.85\t566.43\t3.37\t0.11\t43.29\t5.02\n")
    cfg = load_config("smoke", {"results": str(tmp_path / "results"), "reports": str(tmp_path / "reports")})
    led = audit.ledger_summary(cfg).set_index(["experiment", "stage"])
    img = led.loc[("pyramid", "image")]
    assert (img["jobs"], img["wall_seconds"], img["steps"], img["tokens"]) == (2, 72.0, 20, 4000)
    assert img["device_hours"] == pytest.approx(0.02)
    thr = audit.measured_throughput(led.reset_index())
    assert thr["tokens_per_device_second"] == pytest.approx(4000 / 72.0)  # the VAE (no tokens) is left out
    assert thr["flops_per_device_second"] == pytest.approx(8e9 / 72.0)
    proj = audit.paper_projection(led.reset_index())
    ratio = proj["projected_hours_on_this_device"] / proj["train_flops"]
    assert ratio.to_numpy() == pytest.approx(72.0 / 8e9 / 3600.0)
    assert audit.main(["--profile", "smoke", "--set", f"results={tmp_path / 'results'}",
                       "--set", f"reports={tmp_path / 'reports'}"]) == 0
    out = capsys.readouterr().out
    assert "total device-hours of this run: 0.0300" in out and "train_vae" in out
    csv = pd.read_csv(tmp_path / "reports" / "gpu_hours.csv")
    total = csv[(csv["section"] == "this run (ledger)") & (csv["item"] == "total")]["value"].item()
    assert total == pytest.approx(0.03)
    assert csv[csv["item"].str.startswith("total (128")]["value"].item() == 20736
    assert (tmp_path / "reports" / "gpu_hours.pdf").stat().st_size > 1000


def test_benchmark_file_without_s_column_is_an_error(tmp_path):
    f = tmp_path / "results" / "smoke" / "benchmarks" / "x.tsv"
    f.parent.mkdir(parents=True)
    f.write_text("a\tb\n1\t2\n")
    cfg = load_config("smoke", {"results": str(tmp_path / "results")})
    with pytest.raises(ValueError, match="x.tsv: not a Snakemake benchmark file"):
        audit.benchmark_summary(cfg)


def test_table4_arithmetic_is_consistent():
    t4 = load_paper_table("table4")
    assert (t4["gpus"] * t4["hours"] == t4["a100_hours"]).all() and t4["a100_hours"].sum() == 20736
    assert t4["hours"].tolist() == [12, 90, 60] and (t4["gpus"] == 128).all()
