"""The layer rules of docs/architecture.md, checked on the source (ast), imports inside functions
included: results/ never imports torch or pytest; bench/ never imports pytest; plugin/ is the only
pytest glue."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpt2_fixtures"
PYTEST = {"pytest", "_pytest", "pytest_benchmark", "gpt2_fixtures.plugin"}
TORCH = {"torch", "transformers", "datasets", "gpt2_fixtures.bench"}
# module or folder -> what it must never import (a name or any of its submodules)
RULES = {
    "results": PYTEST | TORCH,
    "bench": PYTEST,
    "config.py": PYTEST | TORCH | {"gpt2_fixtures.results"},
    "cli.py": PYTEST,
    "__init__.py": PYTEST | TORCH,
}

# Breaks still being fixed elsewhere; each entry must still break (else: remove it).
KNOWN: dict[str, str] = {}  # module -> why it may break the rules for now


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def breaks(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def sources(part: str) -> list[Path]:
    path = PACKAGE / part
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("part", sorted(RULES))
def test_layer_imports_only_what_it_may(part: str) -> None:
    files = sources(part)
    assert files, part
    bad = {
        str(f.relative_to(PACKAGE)): sorted(n for n in imported_names(f) if breaks(n, RULES[part]))
        for f in files
    }
    broken = {k for k, v in bad.items() if v}
    assert broken - KNOWN.keys() == set(), {k: bad[k] for k in broken}
    fixed = {k for k in KNOWN if k in bad and k not in broken}
    assert not fixed, f"{sorted(fixed)} follow the rules now: remove them from KNOWN"


def test_only_the_plugin_imports_pytest() -> None:
    outside = [f for f in PACKAGE.rglob("*.py") if "plugin" not in f.relative_to(PACKAGE).parts]
    offenders = [str(f) for f in outside if any(breaks(n, PYTEST) for n in imported_names(f))]
    assert offenders == []


def test_the_rules_catch_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from torch import nn\n    import pytest.fixtures\n")
    names = imported_names(module)
    assert breaks("torch.nn", TORCH) and any(breaks(n, PYTEST) for n in names)
    assert not breaks("torchvision", TORCH)


# ---------------------------------------------------------------------------------------------
# No import cycle: every module's imports (inside functions too) form a graph without loops.

# Cycles allowed for now, named by their modules; each must still be a cycle (else: remove it).
# None is left: results/fingerprint.py broke the last (baseline -> gate -> compare -> baseline).
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from a import b`` counts ``a.b`` when it
    is a module, else ``a``). A module's own parent packages are no edge: Python initialises them
    before it, whatever it imports."""
    modules = {module_name(p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    found = set(cycles(import_graph(PACKAGE)))
    assert found - KNOWN_CYCLES == set(), [sorted(c) for c in found - KNOWN_CYCLES]
    assert found >= KNOWN_CYCLES, "a known cycle is gone: remove it from KNOWN_CYCLES"


def test_the_cycle_finder_finds_one(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []
