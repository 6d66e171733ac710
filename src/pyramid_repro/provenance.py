"""Provenance stamped on every artifact (docs/design.md §3) and atomic file writes."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import secrets
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from pyramid_repro.base import repo_root
from pyramid_repro.config import for_experiment
from pyramid_repro.tree import Config


def git_commit() -> str:
    """Commit of the checkout (with '-dirty' when tracked files differ), or 'unknown' outside git."""
    try:
        root = repo_root()
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def device_name(device=None) -> str:
    """Name of the device a job computes on: the GPU's (e.g. 'NVIDIA A100-SXM4-80GB') for a CUDA device, else the
    CPU model. Without `device`: the first GPU if PyTorch sees one."""
    try:
        import torch

        if device is None and torch.cuda.is_available():
            device = torch.device("cuda", 0)
        if device is not None and torch.device(device).type == "cuda":
            return torch.cuda.get_device_name(torch.device(device))
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU: " + (platform.processor() or platform.machine())


# the sections of the config that change what a run measures (not where it runs, which experiments a workflow
# selects, or where files go): two artifacts with the same `measured_hash` measured the same thing
MEASURED_SECTIONS = ("seed", "release", "release_resolution", "data", "vae", "pyramid", "model", "text_encoder",
                     "train", "eval")


def measured_hash(cfg: Config) -> str:
    """Hash of the config sections that change what was measured (MEASURED_SECTIONS; not train.seeds, nor train.run
    of run 0: `Config.run_keys_to_drop`)."""
    return cfg.config_hash(MEASURED_SECTIONS, cfg.run_keys_to_drop())


def identical_experiments(cfg: Config, names: list[str]) -> list[tuple[str, str, str]]:
    """(earlier, later, measured hash) for each experiment of `names` whose config, resolved for `cfg`'s profile
    and user overrides, equals an earlier one's in every section that changes what a run measures
    (MEASURED_SECTIONS: training and sampling alike): such an arm would be trained (or sampled) a second time and
    compared as if it were different, e.g. an ablation whose override is already the profile's default. Each
    later experiment is paired with the first of `names` it equals."""
    first: dict[str, str] = {}
    out = []
    for name in names:
        h = measured_hash(for_experiment(cfg, name))
        if h in first:
            out.append((first[h], name, h))
        else:
            first[h] = name
    return out


def identical_experiments_warning(profile: str, pairs: list[tuple[str, str, str]]) -> list[str]:
    """One line per pair of `identical_experiments`, naming both experiments and the profile."""
    return [f"warning: experiments {a!r} and {b!r} resolve to the same configuration on profile {profile!r} "
            f"(measured hash {h}: {', '.join(MEASURED_SECTIONS)}); {b!r} would be trained and compared as if it "
            f"differed from {a!r}. Change its overrides (replication/experiments.yaml) or leave one out of the "
            "run's `experiments` (docs/howto.md §1)" for a, b, h in pairs]


def provenance(cfg: Config, backend: str | None = None, experiment: str | None = None) -> dict[str, Any]:
    out = {
        "profile": cfg.profile,
        "config_hash": cfg.config_hash(),
        "measured_hash": measured_hash(cfg),
        "commit": git_commit(),
        "created_utc": utc_now(),
        "host": platform.node(),
    }
    if experiment is not None:
        out["experiment"] = experiment
    if backend is not None:
        out["backend"] = backend
    return out


def _new_temp_file(path: Path) -> tuple[int, str]:
    """A new, empty temp file beside `path` (open for writing): created with mode 0666 less the umask, as open()
    creates files (tempfile.mkstemp would make it 0600, and the rename would keep that)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename (a crash never leaves half a file). The file
    gets the permissions open() would give it (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def write_csv(path: str | Path, fields: list[str], rows: list[dict[str, Any]]) -> None:
    """A whole CSV with header `fields` (cells of other keys ignored, missing ones empty), written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """Arrays by name as a compressed .npz, written atomically (`atomic_write_bytes`)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def append_csv_row(path: str | Path, fields: list[str], row: dict[str, Any]) -> None:
    """Append one row to a CSV with header `fields` (written for a new file; missing cells empty). A file written
    before a column was added (a job resumed across versions) is rewritten with today's header first, its old
    rows keeping their values and an empty cell in each new column."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = list(csv.DictReader(path.open())) if path.exists() and path.stat().st_size else []
    if old and list(old[0]) != fields:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(old)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in fields})
