"""The layers of docs/architecture.md hold in the code: no module imports a higher layer, no import cycle
(function-local imports included), no private name imported across packages, every module in a layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "compscale"


def _layers() -> dict[str, int]:
    """``{module or package name: layer}`` from the table in docs/architecture.md."""
    table = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*?)\|", line)
        if m:
            for name in re.findall(r"`([\w.]+)`", m.group(2)):
                table[name] = int(m.group(1))
    return table


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(name: str, path: Path) -> set[str]:
    """Every compscale module ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("compscale")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("compscale"):
                found |= {f"{base}.{a.name}" for a in node.names} | {base}
    return found


def _top(module: str) -> str:
    """The layer unit of a module: ``compscale.search.step1`` -> ``search``; the package itself -> ``compscale``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "compscale"


MODULES = _modules()
LAYERS = _layers()


def test_every_module_has_a_layer():
    missing = sorted({_top(m) for m in MODULES} - set(LAYERS))
    assert not missing, f"add these to the layer table in docs/architecture.md: {missing}"
    assert not sorted(set(LAYERS) - {_top(m) for m in MODULES}), "the table names modules that do not exist"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_respect_the_layers(name):
    mine = LAYERS[_top(name)]
    for target in _imports(name, MODULES[name]):
        if target not in MODULES:  # ``from pkg import name`` of a non-module name: the package is checked
            continue
        assert LAYERS[_top(target)] <= mine, f"{name} (layer {mine}) imports {target} (layer {LAYERS[_top(target)]})"


def test_no_private_name_is_imported_across_packages():
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compscale"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") \
                            and _top(node.module) != _top(name):
                        offenders.append(f"{name}: from {node.module} import {alias.name}")
    assert not offenders, offenders


def test_no_import_cycle():
    graph = {m: {t for t in _imports(m, p) if t in MODULES and t != m and not m.startswith(t + ".")}
             for m, p in MODULES.items()}
    # A package's __init__ importing its own modules is not a cycle with them (Python loads it first).
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
