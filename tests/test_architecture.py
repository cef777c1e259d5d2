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
