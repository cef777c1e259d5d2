"""pytest glue for gpt2-bench, one module per role (docs/architecture.md):

- ``options``: every ``--gpt2-*`` option, declared once (``RunOptions``); ``aliases``:
  pytest-benchmark's round options as aliases of ours
- ``collection``: phase markers, the -m check, parametrization, shards
- ``fixtures``: settings, the session fixtures, the report header, machine info
- ``outcomes``: failed and deselected cases, recorded in the results
- ``gate_hooks``, ``report_hooks``: the session-end gate, summary, W&B and atomic JSON
- ``benchmark_session``: the one reader of pytest-benchmark's private session object

Nothing here measures or compares: that lives in ``bench/`` and ``results/``, which unit tests
import without pytest. ``-p gpt2_fixtures.plugin`` registers this module and, through
``pytest_plugins``, each module below.
"""

from __future__ import annotations

import pytest

from gpt2_fixtures.bench import distributed as dist_bench
from gpt2_fixtures.plugin import collection, fixtures
from gpt2_fixtures.plugin.gate_hooks import GateHooks
from gpt2_fixtures.plugin.report_hooks import AtomicJsonHooks, ReportHooks

pytest_plugins = [
    "gpt2_fixtures.plugin.options",
    "gpt2_fixtures.plugin.collection",
    "gpt2_fixtures.plugin.fixtures",
    "gpt2_fixtures.plugin.outcomes",
]


def pytest_configure(config: pytest.Config) -> None:
    # Under torchrun only rank 0 writes results; before anything reads the output options.
    dist_bench.rank_zero_outputs_only(config.option, dist_bench.launch_env())
    fixtures.settings(config)  # fail fast, before collection, with one line
    collection.register_markers(config)  # the phases' markers first: the -m check reads them
    collection.check_marker_expression(config)
    config.pluginmanager.register(AtomicJsonHooks(), "gpt2-atomic-json")
    config.pluginmanager.register(GateHooks(config), "gpt2-gate")
    config.pluginmanager.register(ReportHooks(config), "gpt2-report")
