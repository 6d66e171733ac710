"""A checkpoint carries its method: the sampling method of a DiT checkpoint comes from the resolved config saved
beside its weights (`train_config.yaml` in results/<profile>/<experiment>/dit/<stage>/final/), not from the
profile's defaults.

The *method keys* are the config values that decide how a checkpoint is sampled or what it was trained to do:

- every key of the `pyramid` section: the number of spatial stages and their end sigmas, the temporal pyramid
  (compressed or full-resolution history), corrective noise, renoising, the timestep grid, and the sampler
  (`pyramid.sampler.*`: Euler steps per stage for the first and later frames, the two guidance scales, the last
  sigma). `pyramid.stage_weights` and `pyramid.history_corruption` only act in training; they are part of the set
  because they name how the checkpoint was trained, so `--experiment no_history_corruption` on the `pyramid`
  checkpoint is caught as the wrong experiment;
- `model.attention` (blockwise causal or bidirectional across frames; the weights' own `config.json` fixes the
  mask the model applies, the key is checked so the label says what was trained).

What is *not* a method key: the shapes (ARCHITECTURE_KEYS of report/compare.py, checked separately), the prompt
suite, samples per prompt, seed, the curriculum's video size and length (the protocol of the comparison: every
row of a table is generated at the profile's size), precision and device.

How the method is settled (`resolve_method`):

1. With no `train_config.yaml` beside the weights (a checkpoint from an older version), the profile's method is
   used and the label says so.
2. A method key the user did not set keeps the checkpoint's value.
3. A method key the user set (`--experiment` fixes all of them; `--set` and the workflow's overrides the ones they
   name) must equal the checkpoint's value, else a ConfigError names the key, both values and where each comes
   from. Two explicit, labelled exceptions: the keys an inference-only experiment of replication/experiments.yaml
   (`trains: false`, e.g. `no_corrective_noise`) overrides (that is what such an experiment is for), and every key
   when `override=True` (`--override-method` on the command line). Each exception is listed in the method's label.

The workflow's sample rule passes `--experiment` matching the checkpoint, so its config already equals the saved
one key for key and `resolve_method` returns it unchanged (same object, same results).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pyramid_repro.config import Config, ConfigError, build_config, check_consistency, load_yaml
from pyramid_repro.experiments import get_experiment

METHOD_SECTIONS = ("pyramid",)  # every leaf of these sections is a method key
METHOD_EXTRA_KEYS = ("model.attention",)
TRAIN_CONFIG = "train_config.yaml"


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of the leaves of a nested dict (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def method_keys(cfg: Config) -> list[str]:
    """The dotted method keys of `cfg` (see the module docstring)."""
    tree = cfg.to_dict()
    keys = [k for s in METHOD_SECTIONS for k in _leaves(tree[s], s)]
    return keys + list(METHOD_EXTRA_KEYS)


MISSING = object()  # what get_dotted returns for a key the tree does not have


def get_dotted(tree: dict, dotted: str) -> Any:
    """The value at `a.b.c` of a nested dict, or MISSING (an older train_config.yaml may not record every key)."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def read_train_config(path: Path) -> dict:
    """The resolved config saved beside a checkpoint (train_config.yaml) as a plain dict; ConfigError if it is not
    YAML."""
    try:
        return load_yaml(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None


def _set(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = copy.deepcopy(value)


def describe_method(cfg: Config) -> str:
    """One line naming the sampling method of `cfg`: pyramid or full sequence, history, attention, steps, guidance
    (progress bars, samples.json and the compare row)."""
    p, s = cfg.pyramid, cfg.pyramid.sampler
    if p.stages == 1:
        words = ["fullseq: 1 stage", f"{cfg.model.attention} attention", f"{sum(p.stage_steps(True))} Euler steps",
                 f"guidance {s.guidance_video:g}"]
    else:
        steps = "/".join(",".join(map(str, p.stage_steps(f))) for f in (True, False))
        words = [f"pyramid: {p.stages} stages", "temporal pyramid" if p.temporal_pyramid else "full-res history",
                 f"{cfg.model.attention} attention", f"Euler steps {steps}",
                 f"guidance {s.guidance_first_frame:g}/{s.guidance_video:g}"]
        if not p.corrective_noise:
            words.append("corrective noise off")
    if not p.renoise:
        words.append("no renoise")
    return ", ".join(words)


@dataclass(frozen=True)
class SamplingMethod:
    """The method a checkpoint is sampled with and where it came from."""

    summary: str  # describe_method of the config used
    source: str  # the train_config.yaml read, or why none was
    overrides: tuple[str, ...] = field(default_factory=tuple)  # "key: checkpoint -> used (why)"

    @property
    def label(self) -> str:
        """The summary, plus every labelled override."""
        return self.summary + (f" [overridden: {'; '.join(self.overrides)}]" if self.overrides else "")

    def to_dict(self) -> dict:
        return {"method": self.summary, "source": self.source, "overrides": list(self.overrides)}


def _explicit_keys(cfg: Config, keys: list[str], experiment: str | None) -> tuple[dict[str, str], set[str]]:
    """{method key the user set: where it was set}, and the keys an inference-only experiment overrides."""
    explicit: dict[str, str] = {}
    allowed: set[str] = set()
    if experiment is not None:
        exp = get_experiment(experiment)
        explicit.update({k: f"--experiment {experiment}" for k in keys})
        if not exp.trains:
            allowed = {k for k in _leaves(exp.overrides) if k in keys}
    user = _leaves(getattr(cfg, "_user_overrides", None) or {})
    explicit.update({k: f"--set {k} (or the workflow's --config)" for k in user if k in keys})
    return explicit, allowed


def resolve_method(cfg: Config, checkpoint: Path, experiment: str | None = None,
                   override: bool = False) -> tuple[Config, SamplingMethod]:
    """`cfg` with the method keys of the checkpoint's train_config.yaml, and the SamplingMethod used (rules in
    the module docstring). Raises ConfigError naming the key and both values when `--experiment`/`--set`
    contradict the checkpoint and neither an inference-only experiment nor `override` allows it. Returns `cfg`
    itself when nothing changes."""
    tc = Path(checkpoint) / TRAIN_CONFIG
    if not tc.is_file():
        return cfg, SamplingMethod(describe_method(cfg), f"the profile's ({tc} not found: an older checkpoint)")
    saved = read_train_config(tc)
    keys = method_keys(cfg)
    ours = cfg.to_dict()
    explicit, allowed = _explicit_keys(cfg, keys, experiment)
    tree = copy.deepcopy(ours)
    changed, overrides = False, []
    for key in keys:
        theirs, mine = get_dotted(saved, key), get_dotted(ours, key)
        if theirs is MISSING or theirs == mine:
            continue  # an older checkpoint may not record a key; equal values need no decision
        if key in explicit:
            if key in allowed:
                overrides.append(f"{key}: {theirs!r} -> {mine!r} (inference-only experiment {experiment})")
                continue
            if override:
                overrides.append(f"{key}: {theirs!r} -> {mine!r} (--override-method)")
                continue
            raise ConfigError(
                f"{tc}: the checkpoint was trained and is sampled with {key}={theirs!r}, but {explicit[key]} asks "
                f"for {key}={mine!r}. Drop that option (the checkpoint's own method is used by default), name the "
                "experiment the checkpoint was trained as, or pass --override-method to sample it otherwise on "
                "purpose (the row is then labelled)")
        _set(tree, key, theirs)
        changed = True
    if changed:
        new = build_config(tree)
        check_consistency(new)
        new._user_overrides = getattr(cfg, "_user_overrides", {})  # not a field (config.load_config)
        cfg = new
    return cfg, SamplingMethod(describe_method(cfg), str(tc), tuple(overrides))
