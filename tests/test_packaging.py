"""The install/test commands and dependency lists cannot drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text, re.S)
    assert m, f"README.md has no ```bash block after <!-- {marker} -->"
    lines = [ln for ln in m.group(1).splitlines() if ln.strip()]
    assert len(lines) == 1, f"the README's {marker} must be exactly one command line, got {lines}"
    return lines[0].strip()


def test_ci_runs_the_readme_test_command_verbatim():
    cmd = _readme_command("test-command")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert cmd in [ln.strip() for ln in ci], f".ci/run does not run the README test command {cmd!r}"


def test_main_command_runs_the_default_target():
    cmd = _readme_command("main-command")
    assert "snakemake --cores all reports/table1.pdf" in cmd
    assert cmd.startswith("pip install"), "the main command must install what it needs in the same line"


def _names(reqs: list[str]) -> dict[str, str]:
    out = {}
    for r in reqs:
        r = r.strip().strip('"')
        m = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", r)
        out[m.group(1).lower().replace("_", "-")] = m.group(2).replace(" ", "")
    return out


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(py["dependencies"] + py["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    got = _names([p for p in pip_section if not p.startswith("-e")])
    assert got == wanted, (
        f"environment.yml pip section differs from pyproject.toml: "
        f"only in env {sorted(set(got) - set(wanted))}, only in pyproject {sorted(set(wanted) - set(got))}, "
        f"different pins {[k for k in got if k in wanted and got[k] != wanted[k]]}"
    )
    assert "-e ." in pip_section, "environment.yml must install this package (-e .)"


def test_torch_pins_stay_within_the_local_cache():
    deps = _names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert "<=2.14.1" in deps["torch"] and "<=0.29.1" in deps["torchvision"]


def test_gitignore_keeps_results_and_reports_out():
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "results/" in ignore and "reports/*" in ignore


def test_ruff_check_is_clean():
    """`ruff check` (configured in pyproject.toml) over the whole repository, as part of CI's test run."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
