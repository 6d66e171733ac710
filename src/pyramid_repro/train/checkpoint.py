"""Atomic training checkpoints (docs/design.md §6: a crash loses at most the steps since the last checkpoint).

A checkpoint is one file `step_<n>.pt` holding model and optimizer state, the step, the CPU RNG state and any
`extra` payload (loss trace, EMA weights, scheduler state). It is written to a temporary file and renamed, so a
kill during the write never leaves a truncated checkpoint; the newest `keep` files are kept.

A checkpoint folder also records the fingerprint of the configuration that wrote it (`fingerprint.txt`):
`resume_point` resumes only from checkpoints of the same configuration and moves checkpoints of another one
aside (to `<folder>.stale-<fingerprint>`), so changing a profile value and rerunning retrains instead of
failing on mismatched weights or silently continuing a different run.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = [(int(m.group(1)), folder / f) for f in os.listdir(folder) if (m := _NAME.match(f))]
    return sorted(out)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, or None."""
    ck = list_checkpoints(folder)
    return ck[-1][1] if ck else None


def resume_point(folder: Path, fingerprint: str) -> Path | None:
    """The newest checkpoint in `folder` written under `fingerprint`, or None to start fresh.

    Checkpoints written under another (or an unrecorded) configuration are moved to
    `<folder>.stale-<old fingerprint>` with a message; the folder is then stamped with `fingerprint`.
    """
    folder = Path(folder)
    stamp = folder / "fingerprint.txt"
    old = stamp.read_text().strip() if stamp.is_file() else "unrecorded"
    if list_checkpoints(folder) and old != fingerprint:
        dest = folder.with_name(f"{folder.name}.stale-{old}")
        n = 1
        while dest.exists():
            dest, n = folder.with_name(f"{folder.name}.stale-{old}-{n}"), n + 1
        folder.rename(dest)
        print(f"checkpoints in {folder} were written under another configuration ({old}, now {fingerprint}); "
              f"moved to {dest}, training from scratch")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    return latest_checkpoint(folder)


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module | dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | None = None,
                    extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write a checkpoint atomically and delete all but the newest `keep`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = model if isinstance(model, dict) else {"model": model}
    opts = optimizer if isinstance(optimizer, dict) else ({"optimizer": optimizer} if optimizer else {})
    state = {
        "step": step,
        "models": {k: m.state_dict() for k, m in models.items()},
        "optimizers": {k: o.state_dict() for k, o in opts.items()},
        "rng": {"torch": torch.get_rng_state()},
        "extra": extra or {},
    }
    path = checkpoint_path(folder, step)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for _, old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, model: torch.nn.Module | dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | None = None,
                    restore_rng: bool = True, mmap: bool = False) -> dict[str, Any]:
    """Restore models/optimizers in place from `path`; returns {"step", "extra"}. `mmap`: map the file instead of
    reading it (every process of a sharded job reads the whole file: mapped, they share one copy in memory)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - name the file in the error
        raise RuntimeError(f"checkpoint {path} cannot be read ({e}); delete it to resume from an older one") from e
    models = model if isinstance(model, dict) else {"model": model}
    opts = optimizer if isinstance(optimizer, dict) else ({"optimizer": optimizer} if optimizer else {})
    for k, m in models.items():
        if k not in state["models"]:
            raise KeyError(f"checkpoint {path} has no model '{k}' (has {sorted(state['models'])})")
        m.load_state_dict(state["models"][k])
    for k, o in opts.items():
        if k in state["optimizers"]:
            o.load_state_dict(state["optimizers"][k])
    if restore_rng and "torch" in state.get("rng", {}):
        torch.set_rng_state(state["rng"]["torch"])
    return {"step": state["step"], "extra": state.get("extra", {})}
