"""the report rule's inputs (every experiment x backend metrics JSON, FID curves of the trained
experiments) and the report command's outputs with no results at all."""

import re
import subprocess
import sys
from pathlib import Path

from pyramid_repro.commands import report as report_command
from pyramid_repro.config import load_config
from pyramid_repro.experiments import experiments, training_experiments

ROOT = Path(__file__).resolve().parents[1]


def test_report_rule_inputs_and_outputs(tmp_path):
    res, rep = tmp_path / "res", tmp_path / "rep"
    p = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "profile=smoke",
                        f"results={res}", f"reports={rep}", "--", str(rep / "smoke" / "table1.pdf")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    block = p.stdout.split("rule report:")[1]
    inputs = set(re.search(r"input: (.*)", block).group(1).split(", "))
    outputs = set(re.search(r"output: (.*)", block).group(1).split(", "))
    backends = load_config("smoke").eval.backends
    want = {f"{res}/smoke/{e}/metrics/{b}.json" for e in experiments() for b in backends}
    want |= {f"{res}/smoke/{e}/fid_curve.csv" for e in training_experiments()}
    assert want <= inputs
    from pyramid_repro.layout import REPORT_FILES

    assert {f"{rep}/smoke/{n}" for n in REPORT_FILES} == outputs  # every file the job writes, table6 not expected


def test_report_with_no_results_writes_every_workflow_output(tmp_path, capsys):
    out = tmp_path / "rep"
    assert report_command.main(["--profile", "smoke", "--set", f"results={tmp_path / 'r'}", "--out", str(out)]) == 0
    from pyramid_repro.layout import REPORT_FILES

    for n in REPORT_FILES:  # the report rule's declared outputs, placeholders included
        assert (out / n).is_file() and (out / n).stat().st_size > 0, n
    assert not (out / "table6.pdf").exists()
    md = (out / "table1.md").read_text()
    cfg = load_config("smoke", {"results": str(tmp_path / "r")})
    assert "only the paper's rows" in md and f"config {cfg.config_hash()}" in md and "profile smoke" in md
