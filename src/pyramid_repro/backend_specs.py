"""The scoring backends the suite knows: one declarative entry per name (the facts every layer may ask).

What a backend *is* lives here, low in the package, so the config loader can reject a misspelt ``eval.backends``
entry when the config is read, and the workflow and the reports can ask about a backend without importing the
scoring code. How a backend *scores* lives in :mod:`pyramid_repro.eval.backends` (its ``SCORERS`` dict, keyed by
the same names; a test keeps the two key sets equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyramid_repro.base import ConfigError

InputKind = Literal["frames", "files"]


@dataclass(frozen=True)
class BackendSpec:
    """One scoring backend.

    `reads`: ``frames`` = scored in-process from the sampled videos' decoded frames (eval/score.py decodes them);
    ``files`` = the backend's own code reads the sampled video files (VBench, EvalCrafter: separate installations).
    `needs_gpu`: its score job asks the scheduler for a GPU. `paper_table`: the paper table that only this
    backend's metrics fill (EvalCrafter's raw metrics, Table 6), None for the tables every run renders."""

    name: str
    label: str
    reads: InputKind
    needs_gpu: bool = False
    paper_table: str | None = None


BACKENDS: dict[str, BackendSpec] = {s.name: s for s in (
    BackendSpec("synthetic", "synthetic proxy (not VBench)", "frames"),
    BackendSpec("fid-probe", "probe-feature FID (offline proxy, not Inception FID)", "frames"),
    BackendSpec("clean-fid", "FID/KID (clean-fid, Inception)", "frames"),
    BackendSpec("vbench", "VBench (official)", "files", needs_gpu=True),
    BackendSpec("evalcrafter", "EvalCrafter (official)", "files", paper_table="table6"),
)}


def backend_names() -> list[str]:
    """The known backend names, in registry order."""
    return list(BACKENDS)


def backend_spec(name: str) -> BackendSpec:
    """The entry of `name`; ConfigError naming the known backends when there is none."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; expected one of {sorted(BACKENDS)}") from None


def frame_backends() -> tuple[str, ...]:
    """Backends scored from decoded frames (the others read the video files themselves)."""
    return tuple(n for n, s in BACKENDS.items() if s.reads == "frames")


def backends_filling(table: str) -> tuple[str, ...]:
    """Backends whose metrics fill the paper table `table` (e.g. "table6": EvalCrafter)."""
    return tuple(n for n, s in BACKENDS.items() if s.paper_table == table)


def unknown_backends(names: list[str]) -> list[str]:
    """The entries of `names` that are not backends (config validation: eval.backends)."""
    return [n for n in names if n not in BACKENDS]


__all__ = ["BACKENDS", "BackendSpec", "backend_names", "backend_spec", "backends_filling", "frame_backends",
           "unknown_backends"]
