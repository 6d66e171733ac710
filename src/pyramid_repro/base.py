"""The leaf of the package: the configuration error, the YAML reader and the repository's paths.

Every other ``pyramid_repro`` module may import this one; it imports none of them (the bottom of the package's
layer order). :mod:`pyramid_repro.config` re-exports these names, so upper layers keep writing
``from pyramid_repro.config import ConfigError, load_yaml``.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("smoke", "tiny", "small", "paper", "finetune")
# JSON of config overrides applied before --set: how the Snakemake workflow hands its --config to every job (here,
# not in cliutil, so that the Snakefile reads it without importing the commands' layer and its models)
OVERRIDES_ENV = "PYRAMID_REPRO_OVERRIDES"


class ConfigError(ValueError):
    """A configuration file or override is invalid. The message names file, key and expectation."""


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax: `2e-3` and `1E5` are numbers, as in JSON and in every
    YAML 1.2 reader (YAML 1.1, PyYAML's default, reads them as strings unless written `2.0e-3`)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text (a profile, an override's value, a prompt suite) with YAML 1.2 numbers: `--set
    train.lr=2e-3` means the number 0.002, not the string '2e-3'."""
    return yaml.load(text, Loader=_Yaml12Loader)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (a profile, replication/config.yaml, a saved config); ConfigError
    naming the file when it is missing, not YAML or not a mapping."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; lists and scalars in `over` replace those in `base`."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> dict[str, Any]:
    """`a.b.c=value` -> {'a': {'b': {'c': value}}}, value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value (e.g. vae.train.steps=100)")
    key, raw = item.split("=", 1)
    value = load_yaml(raw)
    out: dict[str, Any] = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------


def repo_root() -> Path:
    """The replication checkout: $PYRAMID_REPRO_ROOT, else the nearest parent holding replication/."""
    env = os.environ.get("PYRAMID_REPRO_ROOT")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        if (base / "replication" / "profiles").is_dir():
            return base
    raise ConfigError(
        "cannot find the replication/ folder: run from the repository checkout or set PYRAMID_REPRO_ROOT"
    )


def replication_dir() -> Path:
    return repo_root() / "replication"


def default_profile() -> str:
    """The embedded default profile: replication/config.yaml's `profile`."""
    return str(read_yaml(replication_dir() / "config.yaml").get("profile", "tiny"))


def schema_path() -> Path:
    return replication_dir() / "schemas" / "config.schema.yaml"


def profile_path(profile: str) -> Path:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r} (expected one of: {', '.join(PROFILES)})")
    return replication_dir() / "profiles" / f"{profile}.yaml"
