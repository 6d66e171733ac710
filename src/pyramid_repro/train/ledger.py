"""The GPU-hour ledger (docs/design.md §3): one CSV row per training job and stage.

`LedgerRecorder` times a job and appends its row when the job ends (also when it fails, with what it did);
`read_ledgers` collects every ledger of a results tree for the audit.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Any

from pyramid_repro.config import Config
from pyramid_repro.layout import run_name
from pyramid_repro.provenance import append_csv_row, device_name, git_commit, utc_now

LEDGER_FIELDS = [
    "experiment", "stage", "start_utc", "end_utc", "wall_seconds", "device_name", "device_count", "nodes",
    "device_hours", "steps", "samples", "tokens", "flops", "tokens_per_device_second", "commit", "config_hash",
    "profile", "resumed_from_step", "status", "kind", "release",
]
# `kind` of a row: a job that trains from scratch, or one that fine-tunes an authors' release (config `release`,
# recorded in the `release` column). A ledger written before the column reads as pretraining (read_ledgers)
PRETRAIN, FINETUNE = "pretrain", "finetune"


def launch_nodes() -> int:
    """Machines of this job: WORLD_SIZE / LOCAL_WORLD_SIZE under torchrun / accelerate launch, else 1."""
    world, local = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 0) or 0)
    return max(1, world // local) if local else 1


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row (provenance.append_csv_row: header for a new file, an older ledger gains new columns);
    unknown keys are an error."""
    extra = set(row) - set(LEDGER_FIELDS)
    if extra:
        raise KeyError(f"ledger row has unknown fields {sorted(extra)}; expected {LEDGER_FIELDS}")
    append_csv_row(path, LEDGER_FIELDS, row)


class LedgerRecorder:
    """Context manager timing one job: `with LedgerRecorder(path, cfg, experiment=..., stage=...) as led:
    ...; led.update(steps=..., samples=..., tokens=..., flops=...)`."""

    def __init__(self, path: Path, cfg: Config, experiment: str, stage: str, resumed_from_step: int = 0,
                 enabled: bool = True, processes: int = 1, device=None):
        # enabled: the main process of a job; processes: data-parallel processes (one device each) on `device`
        self.path, self.cfg, self.enabled, self.processes = Path(path), cfg, enabled, processes
        self.device = device
        # a training run k >= 1 (train.run) books under its run name, pyramid/seed_1, so the audit counts it apart
        self.row: dict[str, Any] = {"experiment": run_name(experiment, cfg.train.run), "stage": stage,
                                    "resumed_from_step": resumed_from_step, "steps": 0, "samples": 0, "tokens": 0,
                                    "flops": 0.0, "kind": FINETUNE if cfg.release else PRETRAIN,
                                    "release": cfg.release or ""}

    def update(self, **counts: Any) -> None:
        self.row.update(counts)

    def __enter__(self) -> "LedgerRecorder":
        self._t0 = time.time()
        self.row["start_utc"] = utc_now()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled:
            return
        wall = time.time() - self._t0
        n, nodes = self.processes, launch_nodes()
        self.row.update({
            "end_utc": utc_now(), "wall_seconds": round(wall, 3), "device_name": device_name(self.device),
            "device_count": n, "nodes": nodes, "device_hours": wall * n / 3600.0, "commit": git_commit(),
            # throughput per device (GPU, or the CPU process) over the job's whole wall time, FID points included
            "tokens_per_device_second": round(float(self.row["tokens"]) / (wall * n), 1) if wall > 0 else 0.0,
            "config_hash": self.cfg.config_hash(), "profile": self.cfg.profile,
            "status": "ok" if exc_type is None else f"failed: {exc_type.__name__}",
        })
        append_row(self.path, self.row)


def read_ledgers(pattern: str):
    """Every ledger CSV matching a glob (recursive `**` allowed) as one pandas DataFrame; rows of a ledger from
    before the `kind` column are pretraining."""
    import pandas as pd

    files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        return pd.DataFrame(columns=LEDGER_FIELDS)
    df = pd.concat([pd.read_csv(f).assign(ledger=f) for f in files], ignore_index=True)
    df["kind"] = row_kinds(df)
    return df


def row_kinds(df):
    """The `kind` of every row of a ledger DataFrame: FINETUNE where the row says so, else PRETRAIN (a ledger
    from before the column, an empty cell)."""
    if "kind" not in df.columns:
        return [PRETRAIN] * len(df)
    return df["kind"].where(df["kind"] == FINETUNE, PRETRAIN)
