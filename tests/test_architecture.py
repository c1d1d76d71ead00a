"""The house plan holds: layers import only downward, no import circles, module paths in strings resolve.

docs/architecture.md draws the layers. The rule is checked on the source (ast), so it stays
true without importing anything heavy.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

#: Package (group) -> layer. A module belongs to the longest group that prefixes its name.
LAYERS = {
    "auditor.core": 1,
    "auditor.data": 2, "auditor.artifacts": 2,
    "compressors": 3, "auditor.scoring": 3,
    "auditor.analysis": 4,
    # measure sits below study: `auditor run` measures every variant in a unit of its own ([measure]).
    "auditor.measure": 4.5,
    "auditor.study": 5, "auditor.view": 5,
    "auditor.report": 6, "auditor.tui": 6,
    # The top layer is ordered too: the CLI dispatches to commands, `auditor bench` runs benchmarks.
    "auditor.benchmarks": 7.0, "auditor.commands": 7.1, "auditor.cli": 7.2, "auditor.__main__": 7.3, "auditor": 7.3,
}
PACKAGES = ("auditor", "compressors")


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = module_files()


def group_of(module: str) -> str:
    return max((g for g in LAYERS if module == g or module.startswith(g + ".")), key=len)


def imports_of(path: Path, *, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported project module, line) for every import in the file (function-level ones too)."""
    tree = ast.parse(path.read_text())
    nodes = list(_outside_functions(tree)) if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the module pkg.mod when there is one
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found += [(n, node.lineno) for n in names if n.split(".")[0] in PACKAGES]
    return found


def _outside_functions(node: ast.AST):
    """Statements of the module, `if TYPE_CHECKING:` and `try:` blocks included, but not function bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield child
        yield from _outside_functions(child)


def test_every_module_belongs_to_a_layer():
    assert not [m for m in MODULES if m.split(".")[0] == "auditor" and group_of(m) == "auditor"
                and m not in ("auditor", "auditor.cli", "auditor.__main__")]


def test_imports_point_down_only():
    """A module imports its own package or a lower layer, never a sibling package of its layer or a higher one."""
    bad = []
    for module, path in MODULES.items():
        own = group_of(module)
        for target, line in imports_of(path):
            other = group_of(target)
            if other != own and LAYERS[other] >= LAYERS[own]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {own} (L{LAYERS[own]}) imports {target} "
                           f"(L{LAYERS[other]})")
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    graph = {m: {t for t, _ in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # A package's __init__ is imported with each of its modules; count only edges between modules.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_project_imports_are_at_the_top_of_files():
    """Only heavy third-party imports may be deferred into functions; the project's own are at the top."""
    late = []
    for module, path in MODULES.items():
        top = {line for _, line in imports_of(path, top_level_only=True)}
        late += [f"{path.relative_to(ROOT)}:{line}: {t}" for t, line in imports_of(path) if line not in top]
    assert not late, "\n".join(late)


STRING_PATH = re.compile(r"^(?:auditor|compressors)(?:\.\w+)+(?::\w+)?$")


def module_path_strings() -> list[tuple[str, str]]:
    out = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and STRING_PATH.match(node.value):
                out.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.value))
    return out


@pytest.mark.parametrize("where,text", module_path_strings())
def test_module_paths_written_as_strings_resolve(where, text):
    """Backend factory modules, registry targets ("module:Class"), `-m auditor.measure.worker`."""
    module, _, attr = text.partition(":")
    if importlib.util.find_spec(module) is None:
        # "auditor.scoring.backends.torch_backend" is a module; "auditor.core.names.DENSE" would be an attribute
        parent, _, attr = module.rpartition(".")
        assert importlib.util.find_spec(parent) is not None, f"{where}: {text!r} names no module"
        module = parent
    if attr:
        assert hasattr(importlib.import_module(module), attr), f"{where}: {text!r}: no attribute {attr!r}"


def test_there_are_string_module_paths_to_check():
    texts = {t for _, t in module_path_strings()}
    assert "auditor.measure.worker" in texts and any(t.startswith("compressors.wanda:") for t in texts)
