"""The experiments of replication/experiments.yaml: names, methods and profile overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pyramid_repro.base import ConfigError, load_yaml, replication_dir

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
    raw = load_yaml(path.read_text()) or {}
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: experiment '{name}' must be a mapping")
        unknown = set(spec) - _KEYS
        if unknown:
            raise ConfigError(f"{path}: experiment '{name}': unknown key(s) {sorted(unknown)}; "
                              f"expected {sorted(_KEYS)}")
        method = spec.get("method", "pyramid")
        if method not in ("pyramid", "fullseq"):
            raise ConfigError(f"{path}: experiment '{name}'.method={method!r}; expected 'pyramid' or 'fullseq'")
        trains = bool(spec.get("trains", True))
        src = spec.get("checkpoint_from", name)
        out[name] = Experiment(name, spec.get("description", ""), method, trains, src, spec.get("overrides") or {})
    for e in out.values():
        if e.checkpoint_from not in out or not out[e.checkpoint_from].trains:
            raise ConfigError(f"{path}: experiment '{e.name}'.checkpoint_from={e.checkpoint_from!r} is not a "
                              "training experiment")
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


def selected_experiments(chosen: list[str] | None) -> list[str]:
    """The experiments a profile's `experiments` key selects, in the order of experiments.yaml (all for None)."""
    return [n for n in _load() if chosen is None or n in chosen]


# Settings an image (one-frame) curriculum stage never reads: it has no history frames, and with one frame the
# blockwise causal and the bidirectional attention masks are the same.
IMAGE_STAGE_UNUSED: tuple[tuple[str, ...], ...] = (
    ("pyramid", "temporal_pyramid"), ("pyramid", "history_corruption"), ("model", "attention"))


def _flat(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def stage_owner(name: str, stage_kind: str, share_image_stage: bool) -> str:
    """The training experiment that runs `name`'s curriculum stage of kind `stage_kind` (train.share_image_stage).

    Every experiment runs its own video stages. With sharing on, an image stage is run once, by the first
    experiment of experiments.yaml whose overrides differ from `name`'s only in IMAGE_STAGE_UNUSED: the user's
    overrides apply to every experiment alike, so the two runs would be the same computation step for step.
    """
    get_experiment(name)
    if not share_image_stage or stage_kind != "image":
        return name

    def used(exp: str) -> dict:
        return {k: v for k, v in _flat(get_experiment(exp).overrides).items() if k not in IMAGE_STAGE_UNUSED}

    mine = used(name)
    return next(e for e in training_experiments() + [name] if used(e) == mine)
