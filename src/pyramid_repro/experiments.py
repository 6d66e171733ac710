"""The experiments of replication/experiments.yaml: names, methods and profile overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml

from pyramid_repro.config import ConfigError, replication_dir

_KEYS = {"description", "method", "trains", "checkpoint_from", "overrides"}


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    method: str  # "pyramid" | "fullseq"
    trains: bool
    checkpoint_from: str  # experiment whose checkpoint is sampled (itself unless inference-only)
    overrides: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=None)
def _load() -> dict[str, Experiment]:
    path = replication_dir() / "experiments.yaml"
    raw = yaml.safe_load(path.read_text()) or {}
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: experiment '{name}' must be a mapping")
        unknown = set(spec) - _KEYS
        if unknown:
            raise ConfigError(f"{path}: experiment '{name}': unknown key(s) {sorted(unknown)}; expected {sorted(_KEYS)}")
        method = spec.get("method", "pyramid")
        if method not in ("pyramid", "fullseq"):
            raise ConfigError(f"{path}: experiment '{name}'.method={method!r}; expected 'pyramid' or 'fullseq'")
        trains = bool(spec.get("trains", True))
        src = spec.get("checkpoint_from", name)
        out[name] = Experiment(name, spec.get("description", ""), method, trains, src, spec.get("overrides") or {})
    for e in out.values():
        if e.checkpoint_from not in out or not out[e.checkpoint_from].trains:
            raise ConfigError(f"{path}: experiment '{e.name}'.checkpoint_from={e.checkpoint_from!r} is not a training experiment")
    return out


def experiments() -> dict[str, Experiment]:
    return dict(_load())


def get_experiment(name: str) -> Experiment:
    exps = _load()
    if name not in exps:
        raise ConfigError(f"unknown experiment {name!r} (replication/experiments.yaml has: {', '.join(exps)})")
    return exps[name]


def experiment_overrides(name: str) -> dict[str, Any]:
    return get_experiment(name).overrides


def training_experiments() -> list[str]:
    return [n for n, e in _load().items() if e.trains]
