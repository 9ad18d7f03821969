"""The package's layers, enforced on its import graph (top-level and function-level imports).

Each layer imports only itself and the layers below it; there are no import cycles; ``sim/``
never imports ``lab/``; nothing imports the command line ``lab.cli`` but ``lab/__main__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "opd_lib"

# layer number of each top-level module or subpackage of opd_lib (lower = more basic)
LAYERS = {
    # 0: foundations
    "_threads": 0,
    "divergences": 0,
    "sampling": 0,
    "lm": 0,
    "models": 0,
    "tokenizers": 0,
    "validate": 0,
    "fused_divergence": 0,
    # 1: one module per method
    "bounds": 1,
    "gkd": 1,
    "pg": 1,
    "rl": 1,
    "spin": 1,
    "opsd": 1,
    "tip": 1,
    "prefix": 1,
    "curriculum": 1,
    "unified": 1,
    "meta_advantage": 1,
    "geometry": 1,
    "gradient_cloud": 1,
    "chain_rule": 1,
    "hinted_copy": 1,
    # 2: the data behind figures
    "sim": 2,
    # 3: the application
    "lab": 3,
    # 4: presentation
    "book": 4,
    "plotting": 4,
    "interactive": 4,
    "interactive_grid": 4,
    "slider": 4,
    "slider_grid": 4,
    "live_figures": 4,
    "checks": 4,
    "__init__": 4,
}
NAMES = {0: "foundations", 1: "methods", 2: "sim", 3: "lab", 4: "presentation"}


def module_name(path: Path) -> str:
    parts = ["opd_lib", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p) for p in ROOT.rglob("*.py")}


def imports_in(source: str, package: str) -> set[str]:
    """Every name a source imports anywhere (inside functions too), made absolute."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from opd_lib import lm`
    return found


def imports_of(path: Path) -> set[str]:
    """The ``opd_lib`` modules ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = imports_in(path.read_text(encoding="utf-8"), package)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> int:
    key = module.split(".")[1] if module != "opd_lib" else "__init__"
    assert key in LAYERS, f"{module} has no layer: add it to LAYERS in {__file__}"
    return LAYERS[key]


def test_every_module_has_a_layer():
    for module in GRAPH:
        layer(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_its_layer_and_below(module):
    up = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert not up, f"{module} ({NAMES[layer(module)]}) imports a higher layer: {up}"


def test_sim_never_imports_lab():
    bad = {m: sorted(i for i in deps if i.startswith("opd_lib.lab")) for m, deps in GRAPH.items()}
    assert not {m: d for m, d in bad.items() if m.startswith("opd_lib.sim") and d}


def test_nothing_imports_the_command_line():
    users = sorted(m for m, deps in GRAPH.items() if "opd_lib.lab.cli" in deps)
    assert users == ["opd_lib.lab.__main__"]


def test_no_import_cycles():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in sorted(GRAPH.get(module, ())):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_the_checker_sees_function_level_and_relative_imports():
    source = "def f():\n    from opd_lib.lab import trainer\n    from ..lm import Batch\n"
    found = imports_in(source, "opd_lib.sim")
    assert {"opd_lib.lab", "opd_lib.lab.trainer", "opd_lib.lm"} <= found
