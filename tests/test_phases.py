"""The phase registry: each row of config.PHASE_TABLE has its adapter, marker, benchmark file and
docs, and nothing else in the package decides by comparing phase names."""

import ast
from pathlib import Path

import pytest

from gpt2_fixtures.bench import phases
from gpt2_fixtures.config import PHASE_TABLE, PHASES, Phase
from gpt2_fixtures.plugin.collection import PHASE_MARKERS, register_markers

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gpt2_fixtures"


class _Config:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def addinivalue_line(self, name: str, line: str) -> None:
        assert name == "markers"
        self.lines.append(line)


_config = _Config()
register_markers(_config)  # type: ignore[arg-type]
REGISTERED = _config.lines


@pytest.mark.parametrize("row", PHASE_TABLE, ids=PHASES)
def test_every_row_has_its_adapter_marker_benchmark_and_docs(row: Phase) -> None:
    assert phases.ADAPTERS[row.name].phase is row
    assert PHASE_MARKERS[row.marker] == row.name
    assert f"{row.marker}: " in "\n".join(REGISTERED)  # registered from the table
    source = (ROOT / "benchmarks" / row.file).read_text()
    assert f"def {row.benchmark}(" in source and f"@pytest.mark.{row.marker}" in source
    assert f"`{row.name}`" in (ROOT / "docs" / "phases.md").read_text()


def test_an_unknown_phase_of_an_old_file_gets_the_defaults() -> None:
    assert Phase.of("generate") is PHASE_TABLE[2]
    other = Phase.of("train_distributed")
    assert (other.axis, other.rate) == (Phase.of("train").axis, Phase.of("train").rate)
    assert not other.per_token_latency


def _phase_comparisons(path: Path, root: Path = ROOT) -> list[str]:
    """``x == "train"``, ``x in ("infer", ...)`` and the like: a decision by a phase's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            items = (
                operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
            )
            names = [i.value for i in items if isinstance(i, ast.Constant)]
            if any(name in PHASES for name in names):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_decision_compares_a_phase_name() -> None:
    """At most 2 (issue budget); today none: every decision is a row or an adapter's."""
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _phase_comparisons(path)]
    assert len(found) <= 2, found


def test_the_comparison_finder_finds_one(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('def f(phase):\n    return phase == "generate" or phase in ("x", "train")\n')
    assert _phase_comparisons(probe, tmp_path) == ["probe.py:2", "probe.py:2"]
