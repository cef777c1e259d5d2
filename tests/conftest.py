"""Shared by the tests: pytester registered once, the fixtures several files use, and the ``slow``
marker set by rule.

The rule (docs/architecture.md, "Tests"): a test is ``slow`` when it spawns a process, that is
when its body, a fixture of its module, or a function they call that is defined in its module
or in ``helpers.py`` calls ``subprocess.*`` or ``pytester.runpytest_subprocess``
(``helpers.spawning_functions``). It is read from the source, so ``-m "not slow"`` deselects it
before anything runs. A test slow for another reason (it builds models for a minute, or package
code spawns for it) keeps a hand-written ``pytest.mark.slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_bench_dir, save_checkpoint, spawning_functions

pytest_plugins = ["pytester"]


@pytest.fixture
def bench_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder with the real training and inference benchmark files."""
    return make_bench_dir(pytester)


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A directory as ``save_pretrained`` leaves it: the tiny preset's model, no tokenizer."""
    return save_checkpoint(tmp_path / "my-gpt2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` each test that spawns, itself or through a fixture of its module."""
    for item in items:
        spawning = spawning_functions(Path(item.path))
        uses = {getattr(item, "originalname", ""), *getattr(item, "fixturenames", ())}
        if uses & spawning:
            item.add_marker(pytest.mark.slow)
