"""Prompt suites (replication/prompts/): `synthetic` (with ground-truth factors), `vbench` (VBench's full info),
`evalcrafter` (from a local copy at eval.evalcrafter_path)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pyramid_repro.config import Config, ConfigError, replication_dir


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    dimensions: tuple[str, ...] = ()
    factors: dict | None = field(default=None, compare=False)  # ground truth (synthetic suite only)


def _synthetic(cfg: Config) -> list[Prompt]:
    from pyramid_repro.data.synthetic import caption, factors_from_spec

    path = replication_dir() / "prompts" / "synthetic.yaml"
    out = []
    for i, p in enumerate(yaml.safe_load(path.read_text())["prompts"]):
        try:
            f = factors_from_spec(frames=cfg.data.frames, **p["spec"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: prompts[{i}] (id {p.get('id')!r}): bad spec: {e}") from None
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
    return [Prompt(f"evalcrafter_{i:04d}", t) for i, t in enumerate(lines)]


def load_suite(name: str, cfg: Config) -> list[Prompt]:
    """The prompts of a suite (eval.max_prompts is applied by the caller)."""
    if name == "synthetic":
        return _synthetic(cfg)
    if name == "vbench":
        return _vbench()
    if name == "evalcrafter":
        return _evalcrafter(cfg)
    raise ConfigError(f"eval.suite={name!r}; expected synthetic, vbench or evalcrafter")
