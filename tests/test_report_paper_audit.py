"""The paper's numbers as data (checked against a second transcription) and the GPU-hour audit's arithmetic."""

from pathlib import Path

import pandas as pd
import pytest

from pyramid_repro.commands import audit as audit_command
from pyramid_repro.config import load_config
from pyramid_repro.report import audit
from pyramid_repro.report.paper import TABLES, load_paper_table

# A second, independent transcription of arXiv 2410.05954v2 to check replication/paper/*.csv against: Table 1's
# Pyramid Flow and CogVideoX-5B rows, Table 4, Table 5 (16 dimensions), Table 6 (17 raw metrics), the speed figures.
TABLE1 = {"Pyramid Flow (ours)": (81.72, 84.74, 69.62, 99.12, 64.63, "yes"),
          "CogVideoX-5B": (81.61, 82.75, 77.04, 96.92, 70.97, "no")}
TABLE4 = [(1, 50_000, 1536, 12, 128, 1536), (2, 200_000, 768, 90, 128, 11_520), (3, 50_000, 384, 60, 128, 7680)]
TABLE5 = [96.95, 98.06, 99.49, 99.12, 64.63, 63.26, 65.01, 86.67, 50.71, 85.6, 82.87, 59.53, 43.20, 20.91, 23.09,
          26.23]
TABLE6 = [86.09, 88.31, 18.49, 99.90, 0.0019, 98.89, 67.58, 46.0, 1.79, 20.73, 23.29, 68.26, 69.55, 47.74, 56.31,
          68.55, 44.72]


def test_every_table_has_a_source_column():
    for name in TABLES:
        df = load_paper_table(name)
        assert "source" in df.columns and df["source"].str.contains("2410.05954").all(), name
    with pytest.raises(KeyError, match="unknown paper table 'table2'.*table1"):
        load_paper_table("table2")


def test_table1_rows_equal_a_second_transcription():
    t1 = load_paper_table("table1").set_index("model")
    assert len(t1) == 11 and t1.index.is_unique
    for model, row in TABLE1.items():
        assert tuple(t1.loc[model, ["total", "quality", "semantic", "motion_smoothness", "dynamic_degree",
                                    "public_data"]]) == row, model


def test_table4_5_6_and_speed_equal_a_second_transcription():
    t4 = load_paper_table("table4")
    assert [tuple(r) for r in t4[["stage", "steps", "batch", "hours", "gpus", "a100_hours"]].itertuples(index=False)] \
        == TABLE4
    assert (t4["hours"] * t4["gpus"] == t4["a100_hours"]).all() and t4["a100_hours"].sum() == 20_736
    t5 = load_paper_table("table5")
    assert len(t5) == 16 and list(t5["score"]) == TABLE5
    t6 = load_paper_table("table6")
    assert len(t6) == 17 and list(t6["score"]) == TABLE6
    speed = load_paper_table("speed").set_index("setting")["seconds_per_video"]
    assert speed["5 s 384p"] == 56 and speed["5 s 768p"] == 5.5 * 60


def test_audit_paper_prints_20736_per_stage(capsys):
    assert audit_command.main(["--paper"]) == 0
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
    assert audit_command.main(["--profile", "smoke", "--set", f"results={tmp_path / 'results'}",
                       "--set", f"reports={tmp_path / 'reports'}"]) == 0
    out = capsys.readouterr().out
    assert "total device-hours of this run: 0.0300" in out and "train_vae" in out
    csv = pd.read_csv(tmp_path / "reports" / "smoke" / "gpu_hours.csv")  # smoke: reports/<profile>/
    total = csv[(csv["section"] == "this run (ledger)") & (csv["item"] == "total")]["value"].item()
    assert total == pytest.approx(0.03)
    assert csv[csv["item"].str.startswith("total (128")]["value"].item() == 20736
    assert (tmp_path / "reports" / "smoke" / "gpu_hours.pdf").stat().st_size > 1000


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


def test_paper_implied_utilisation_is_flops_over_its_hours():
    from pyramid_repro.report import audit as au

    proj = au.paper_projection(pd.DataFrame())
    for r in proj.itertuples():
        # the same FLOPs at the assumed MFU give the projected hours, so the two ratios must agree
        assert r.implied_mfu == pytest.approx(au.ASSUMED_MFU * r.projected_a100_hours / r.paper_a100_hours)
        assert r.implied_mfu == pytest.approx(r.train_flops / (r.paper_a100_hours * 3600 * 312e12))
    no_benchmarks = pd.DataFrame(columns=["job", "seconds", "cpu_seconds", "max_rss_mb"])
    frame = au.audit_frame(au.paper_table(), au.summarise_ledger(pd.DataFrame()), proj, no_benchmarks)
    rows = frame[frame["section"] == "paper's implied utilisation"]
    assert len(rows) == 4 and 0 < rows["value"].min() < rows["value"].max() < 1
    measured = frame[frame["section"] == "measured utilisation (benchmark e)"]
    assert len(measured) == 1 and "not measured on a GPU yet" in measured["item"].iloc[0]


def test_audit_sets_the_benchmarks_measured_mfu_beside_the_implied(tmp_path):
    """benchmarks/pyramid_vs_fullseq.py writes performance.json; on a GPU its section (e) holds each
    experiment's MFU, which the audit lists under the GPU's name (a CPU run has no MFU and adds nothing)."""
    from pyramid_repro.report import audit as au

    path = tmp_path / "performance.json"
    assert au.measured_mfu(path) == []
    path.write_text('{"device": "2 CPU threads", "paper_training": {}}')
    assert au.measured_mfu(path) == []
    path.write_text('{"device": "NVIDIA H100 80GB HBM3", "paper_training": {"fullseq": {"mfu": 0.41}, '
                    '"pyramid": {"mfu": 0.22}}}')
    measured = au.measured_mfu(path)
    assert [(m["experiment"], m["mfu"]) for m in measured] == [("fullseq", 0.41), ("pyramid", 0.22)]
    no_benchmarks = pd.DataFrame(columns=["job", "seconds", "cpu_seconds", "max_rss_mb"])
    frame = au.audit_frame(au.paper_table(), au.summarise_ledger(pd.DataFrame()), au.paper_projection(pd.DataFrame()),
                           no_benchmarks, measured)
    rows = frame[frame["section"] == "measured utilisation (benchmark e)"]
    assert list(rows["item"]) == ["fullseq on NVIDIA H100 80GB HBM3", "pyramid on NVIDIA H100 80GB HBM3"]
    assert list(rows["value"]) == [0.41, 0.22]


def test_ledger_row_has_throughput_and_an_old_ledger_gains_the_column(tmp_path):
    import csv
    import time

    from pyramid_repro.train.ledger import LEDGER_FIELDS, LedgerRecorder

    path = tmp_path / "ledger.csv"
    old_fields = [f for f in LEDGER_FIELDS if f != "tokens_per_device_second"]
    with path.open("w", newline="") as f:  # a ledger from before the column (a job resumed across versions)
        w = csv.DictWriter(f, fieldnames=old_fields)
        w.writeheader()
        w.writerow({k: "" for k in old_fields} | {"experiment": "pyramid", "stage": "image", "tokens": 10})
    with LedgerRecorder(path, load_config("smoke"), "pyramid", "image", processes=2) as led:
        time.sleep(0.2)  # a measurable wall time
        led.update(tokens=5000)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == LEDGER_FIELDS and rows[0]["tokens"] == "10" and rows[0]["tokens_per_device_second"] == ""
    wall = float(rows[1]["wall_seconds"])
    assert float(rows[1]["tokens_per_device_second"]) == pytest.approx(5000 / (2 * wall), rel=0.05, abs=0.1)


def test_fine_tuning_rows_are_counted_apart_and_an_old_ledger_is_pretraining(tmp_path):
    """A DiT job of a config with `release` books as kind finetune (with the release); a ledger from before the
    column reads as pretraining; the audit sums the two apart and measures throughput on pretraining only."""
    import csv

    from pyramid_repro.report import audit as au
    from pyramid_repro.train.ledger import LEDGER_FIELDS, LedgerRecorder

    res = tmp_path / "results" / "smoke"
    old = res / "pyramid" / "dit" / "image" / "ledger.csv"
    old.parent.mkdir(parents=True)
    fields = [f for f in LEDGER_FIELDS if f not in ("kind", "release")]
    with old.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerow({k: 0 for k in fields} | {"experiment": "pyramid", "stage": "image", "device_name": "CPU",
                                              "wall_seconds": 36.0, "device_hours": 0.01, "tokens": 100, "flops": 1e9})
    cfg = load_config("smoke", {"results": str(tmp_path / "results"), "release": "/releases/miniflux"})
    with LedgerRecorder(res / "pyramid" / "dit" / "video" / "ledger.csv", cfg, "pyramid", "video") as led:
        led.update(tokens=10 ** 9, steps=3)
    rows = au.read_ledger_rows(cfg)
    assert sorted(zip(rows["stage"], rows["kind"])) == [("image", "pretrain"), ("video", "finetune")]
    assert rows.loc[rows["kind"] == "finetune", "release"].item() == "/releases/miniflux"
    summary = au.summarise_ledger(rows)
    hours = au.kind_hours(summary)
    fine = float(summary.loc[summary["kind"] == "finetune", "device_hours"].item())
    assert list(hours.values()) == [pytest.approx(0.01), pytest.approx(fine)]
    assert au.measured_throughput(summary)["tokens_per_device_second"] == pytest.approx(100 / 36.0)
    no_benchmarks = pd.DataFrame(columns=["job", "seconds", "cpu_seconds", "max_rss_mb"])
    frame = au.audit_frame(au.paper_table(), summary, au.paper_projection(summary), no_benchmarks)
    ledger_rows = frame[frame["section"] == "this run (ledger)"].set_index("item")["value"]
    assert ledger_rows[au.KIND_LABELS["pretrain"]] == pytest.approx(0.01)
    assert ledger_rows[au.KIND_LABELS["finetune"]] == pytest.approx(fine)
