"""Prompt suites (replication/prompts/): `synthetic` (ours, with ground-truth factors), `vbench` (VBench's full
prompt suite with its per-dimension structure, VBench_full_info.json), `evalcrafter` (from a local copy at
eval.evalcrafter_path; not redistributed).

`load_suite(name, cfg)` returns a suite in an order balanced across its dimensions (round-robin over each prompt's
primary, first-listed, dimension), so the first eval.max_prompts prompts (0 = the whole suite), which is what the
sampler takes, still score every dimension instead of only the first block of the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pyramid_repro.config import Config, ConfigError, load_yaml, replication_dir
from pyramid_repro.data.synthetic import caption, factors_from_spec
from pyramid_repro.eval.vbench import NORMALIZE

SUITES = ("synthetic", "vbench", "evalcrafter")


@dataclass(frozen=True)
class Prompt:
    """One prompt: a stable id, its text, the VBench dimensions it serves (first = primary) and, for the
    synthetic suite, the ground-truth factors (`Factors.to_dict()`) the text describes."""

    id: str
    text: str
    dimensions: tuple[str, ...] = ()
    factors: dict | None = field(default=None, compare=False)


def _synthetic(cfg: Config) -> list[Prompt]:
    path = replication_dir() / "prompts" / "synthetic.yaml"
    entries = (load_yaml(path.read_text()) or {}).get("prompts")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a non-empty list under 'prompts'")
    out, seen = [], set()
    for i, p in enumerate(entries):
        where = f"{path}: prompts[{i}] (id {p.get('id')!r})"
        if not isinstance(p, dict) or not {"id", "dimensions", "spec"} <= set(p):
            raise ConfigError(f"{where}: expected keys id, dimensions, spec")
        if p["id"] in seen:
            raise ConfigError(f"{where}: duplicate id")
        seen.add(p["id"])
        bad = [d for d in p["dimensions"] if d not in NORMALIZE]
        if bad or not p["dimensions"]:
            raise ConfigError(f"{where}: dimensions {bad or '[]'} are not VBench dimension names {sorted(NORMALIZE)}")
        try:
            f = factors_from_spec(frames=cfg.data.frames, **p["spec"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: bad spec: {e}") from None
        out.append(Prompt(p["id"], caption(f), tuple(p["dimensions"]), f.to_dict()))
    return out


def _vbench() -> list[Prompt]:
    path = replication_dir() / "prompts" / "vbench" / "VBench_full_info.json"
    return [Prompt(f"vbench_{i:04d}", d["prompt_en"], tuple(d["dimension"])) for i, d in
            enumerate(json.loads(path.read_text()))]


def _evalcrafter(cfg: Config) -> list[Prompt]:
    root = cfg.eval.evalcrafter_path
    if not root or not (Path(root) / "prompts.txt").is_file():
        raise ConfigError(f"eval.evalcrafter_path={root!r}: expected a folder with prompts.txt (EvalCrafter's prompt "
                          "list, one per line; not redistributed with this suite)")
    lines = [ln.strip() for ln in (Path(root) / "prompts.txt").read_text().splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{Path(root) / 'prompts.txt'}: no prompts")
    return [Prompt(f"evalcrafter_{i:04d}", t) for i, t in enumerate(lines)]


def balanced_order(prompts: list[Prompt]) -> list[Prompt]:
    """All prompts, reordered round-robin over their primary (first-listed) dimension (groups in order of first
    appearance, suite order within a group), so that every prefix covers the suite's dimensions evenly."""
    groups: dict[str, list[Prompt]] = {}
    for p in prompts:
        groups.setdefault(p.dimensions[0] if p.dimensions else "", []).append(p)
    out: list[Prompt] = []
    for k in range(max((len(g) for g in groups.values()), default=0)):
        out.extend(g[k] for g in groups.values() if k < len(g))
    return out


def load_suite(name: str, cfg: Config, limit: bool = False) -> list[Prompt]:
    """The prompts of suite `name` (synthetic, vbench, evalcrafter) in `balanced_order`, so the first
    eval.max_prompts of them (what the sampler takes; `limit=True` takes them here) cover every dimension."""
    if name == "synthetic":
        prompts = _synthetic(cfg)
    elif name == "vbench":
        prompts = _vbench()
    elif name == "evalcrafter":
        prompts = _evalcrafter(cfg)
    else:
        raise ConfigError(f"eval.suite={name!r}; expected one of {list(SUITES)}")
    if cfg.eval.max_prompts < 0:
        raise ConfigError(f"eval.max_prompts={cfg.eval.max_prompts}; expected 0 (all) or a positive count")
    prompts = balanced_order(prompts)
    return prompts[: cfg.eval.max_prompts] if limit and cfg.eval.max_prompts else prompts
