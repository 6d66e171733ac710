"""The configuration loader: a profile plus overrides, resolved into a validated :class:`Config`.

A run is described by a *profile* (``replication/profiles/<name>.yaml``) plus optional overrides
(an experiment from ``replication/experiments.yaml`` and/or ``snakemake --config key=value``).
Profiles only need to name what differs from the defaults of the typed tree (:mod:`pyramid_repro.tree`).

Every load is validated twice: against the JSON schema in ``replication/schemas/config.schema.yaml``
(generated from the dataclasses, see :func:`~pyramid_repro.tree.json_schema`; Snakemake's ``validate`` reads the
same file) and while building the dataclasses. A misspelt key, a wrong type, an unknown profile or an unknown
scoring backend raises :class:`ConfigError` naming the file, the dotted key and what was expected.

This module re-exports the public names of :mod:`pyramid_repro.base` and :mod:`pyramid_repro.tree`, so upper
layers import the config API from one place: ``from pyramid_repro.config import Config, ConfigError, load_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pyramid_repro.base import (
    PROFILES,
    ConfigError,
    deep_merge,
    default_profile,
    load_yaml,
    parse_override,
    profile_path,
    read_yaml,
    replication_dir,
    repo_root,
    schema_path,
)
from pyramid_repro.experiments import experiment_overrides, get_experiment
from pyramid_repro.tree import (
    RELEASE_KEYS,
    SCHEMA_DIALECT,
    ComputeConfig,
    Config,
    CurriculumStage,
    DataConfig,
    DiTTrainConfig,
    EvalConfig,
    ModelConfig,
    PyramidConfig,
    SamplerConfig,
    SyntheticConfig,
    TextEncoderConfig,
    TrainLoopConfig,
    VAEConfig,
    VAELossConfig,
    build_config,
    check_consistency,
    json_schema,
    schema_yaml,
)


def _schema_check(tree: dict[str, Any], source: str) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    errors = sorted(validator.iter_errors(tree), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            key = ".".join(str(p) for p in e.absolute_path) or "<top level>"
            if e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                extra = sorted(set(e.instance) - set(allowed))
                for x in extra:
                    where = f"{key}.{x}" if key != "<top level>" else x
                    lines.append(f"unknown key '{where}' (expected one of: {', '.join(allowed)})")
            elif e.validator == "enum" and key == "profile":
                lines.append(f"unknown profile {e.instance!r} (expected one of: {', '.join(PROFILES)})")
            else:
                lines.append(f"key '{key}': {e.message}")
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines))


def resolve_tree(
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    experiment: str | None = None,
) -> dict[str, Any]:
    """Merge profile YAML + experiment overrides + user overrides into one validated plain dict."""
    root_cfg = read_yaml(replication_dir() / "config.yaml")
    overrides = dict(overrides or {})
    profile = profile or overrides.pop("profile", None) or default_profile()
    overrides.pop("profile", None)
    ppath = profile_path(profile)
    tree = read_yaml(ppath)
    _schema_check(tree, str(ppath))
    tree["profile"] = profile
    # replication/config.yaml's other keys (results/reports folders) apply to every profile
    tree = deep_merge(tree, {k: v for k, v in root_cfg.items() if k != "profile"})
    if experiment is not None:
        tree = deep_merge(tree, experiment_overrides(experiment))
    tree = deep_merge(tree, overrides)
    _schema_check(tree, f"{ppath} + overrides")
    return tree


def load_config(
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    experiment: str | None = None,
) -> Config:
    """Load and validate the config of `profile` (default: replication/config.yaml's `profile`)."""
    tree = resolve_tree(profile, overrides, experiment)
    cfg = build_config(tree)
    check_consistency(cfg)
    if experiment is not None:
        check_method(cfg, experiment)
    cfg._user_overrides = dict(overrides or {})  # not a field: not hashed, not saved (see for_experiment)
    return cfg


def for_experiment(cfg: Config, experiment: str) -> Config:
    """The same profile and user overrides as `cfg`, resolved for another experiment of experiments.yaml (a config
    read back with load_config_file has no separate user overrides: its values count as the profile's)."""
    return load_config(cfg.profile, getattr(cfg, "_user_overrides", None), experiment)


def check_method(cfg: Config, experiment: str) -> None:
    """An experiment's declared `method` (replication/experiments.yaml) must be what its resolved config trains:
    `fullseq` is one flow stage (pyramid.stages 1), `pyramid` several. Catches overrides that silently turn one
    into the other (e.g. --set pyramid.stages=1 on a pyramid experiment)."""
    method = get_experiment(experiment).method
    if (method == "fullseq") != (cfg.pyramid.stages == 1):
        raise ConfigError(f"experiment {experiment!r} is method {method!r} (replication/experiments.yaml) but its "
                          f"config has pyramid.stages={cfg.pyramid.stages}; a {method} run needs "
                          f"{'pyramid.stages: 1' if method == 'fullseq' else 'pyramid.stages > 1'}")


def load_config_file(path: str | Path) -> Config:
    """Load a full resolved config written by :func:`save_config` (e.g. next to a checkpoint)."""
    path = Path(path)
    tree = read_yaml(path)
    _schema_check(tree, str(path))
    cfg = build_config(tree)
    check_consistency(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


__all__ = [
    # pyramid_repro.base
    "PROFILES",
    "ConfigError",
    "deep_merge",
    "default_profile",
    "load_yaml",
    "parse_override",
    "profile_path",
    "read_yaml",
    "replication_dir",
    "repo_root",
    "schema_path",
    # pyramid_repro.tree
    "RELEASE_KEYS",
    "SCHEMA_DIALECT",
    "ComputeConfig",
    "Config",
    "CurriculumStage",
    "DataConfig",
    "DiTTrainConfig",
    "EvalConfig",
    "ModelConfig",
    "PyramidConfig",
    "SamplerConfig",
    "SyntheticConfig",
    "TextEncoderConfig",
    "TrainLoopConfig",
    "VAEConfig",
    "VAELossConfig",
    "build_config",
    "check_consistency",
    "json_schema",
    "schema_yaml",
    # the loader
    "check_method",
    "for_experiment",
    "load_config",
    "load_config_file",
    "resolve_tree",
    "save_config",
]
