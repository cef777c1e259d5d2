"""Test helpers: a stand-in for pytest-benchmark's fixture, and the README's documented keys."""

import re
from pathlib import Path
from types import SimpleNamespace

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_keys() -> set[str]:
    """Every `name` in the README's extra_info section: the keys a result may hold."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## What each case records", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([a-z][a-z0-9_]*)`", section))


class FakeBenchmark:
    """Runs warmup then timed rounds through setup/step/teardown, as pytest-benchmark's pedantic
    does; ``stats.stats.data`` gets one made-up time per timed round (0.1 s, 0.2 s, ...)."""

    def __init__(self):
        self.stats = None
        self.extra_info = {}

    def pedantic(self, step, setup, teardown, rounds, warmup_rounds, iterations):
        assert iterations == 1
        data = []
        for i in range(warmup_rounds + rounds):
            setup()
            step()
            teardown()
            if i >= warmup_rounds:
                data.append(0.1 * (len(data) + 1))
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=data))
