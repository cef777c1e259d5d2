"""The one place that touches pytest-benchmark's private state: its session object
(``config._benchmarksession``, which has no public accessor) and its fixture's metadata.

Reads only, except five writes that keep results true: the JSON writer is swapped for an atomic
one, saved results always keep their per-round samples, a failed case's fixture is marked as
errored (so it keeps no time), and a case's ``params`` and ``options`` are set to what ran
(pedantic rounds, the case's plain fields).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_benchmark.utils import safe_dumps

from gpt2_fixtures.results import files

_COMMIT = pytest.StashKey[dict[str, Any]]()
# Options pytest-benchmark records that pedantic mode does not use: shown as null, not as if set.
_CALIBRATION_OPTIONS = ("min_time", "max_time", "precision", "confidence")


def _session(config: pytest.Config) -> Any | None:
    return getattr(config, "_benchmarksession", None)


def measured(config: pytest.Config) -> list[Any]:
    """The benchmarks that kept a time (pytest-benchmark drops fixtures with errors)."""
    bs = _session(config)
    return [b for b in (bs.benchmarks if bs else []) if b and not b.has_error]


def benchmark_dicts(config: pytest.Config, include_data: bool = True) -> list[dict[str, Any]]:
    return [b.as_dict(include_data=include_data) for b in measured(config)]


def commit_info(config: pytest.Config) -> dict[str, Any]:
    """The commit as pytest-benchmark records it (its hooks; runs git once per session)."""
    if _COMMIT not in config.stash:
        info = config.hook.pytest_benchmark_generate_commit_info(config=config)
        config.hook.pytest_benchmark_update_commit_info(config=config, commit_info=info)
        config.stash[_COMMIT] = info
    info = config.stash[_COMMIT]
    return dict(info)


def results_document(config: pytest.Config) -> dict[str, Any]:
    """This run's results exactly as ``--benchmark-json`` writes them: per-round data, machine
    and commit info, and what every ``pytest_benchmark_update_json`` hook adds."""
    hook = config.hook
    machine_info = hook.pytest_benchmark_generate_machine_info(config=config)
    hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
    benchmarks = measured(config)
    doc = hook.pytest_benchmark_generate_json(
        config=config,
        benchmarks=benchmarks,
        include_data=True,
        machine_info=machine_info,
        commit_info=commit_info(config),
    )
    hook.pytest_benchmark_update_json(config=config, benchmarks=benchmarks, output_json=doc)
    return json.loads(safe_dumps(doc))  # plain JSON types, as a saved file holds


def write_json_atomically(config: pytest.Config) -> None:
    """``--benchmark-json`` through one atomic writer: pytest-benchmark opens the file before it
    serialises, so a failure there (or a kill) left an empty file where the old results were."""
    bs = _session(config)
    if bs is None or not getattr(bs, "json", None):
        return

    def save_json(output_json: dict[str, Any]) -> None:
        files.atomic_write_text(bs.json, safe_dumps(output_json, ensure_ascii=True, indent=4))
        bs.logger.info(f"Wrote benchmark data in: {bs.json}", purple=True)

    bs.save_json = save_json


def keep_round_data(config: pytest.Config) -> None:
    """Every saved result holds its per-round samples (``stats.data``), also under
    ``--benchmark-autosave`` without ``--benchmark-save-data``: the gate judges rounds, and a
    baseline without them could only be judged from means (docs/gate.md)."""
    bs = _session(config)
    if bs is not None:
        bs.save_data = True


def _fixture(item: pytest.Item) -> Any | None:
    return getattr(item, "funcargs", {}).get("benchmark")


def drop_timing(item: pytest.Item) -> None:
    """Keep a failed case out of the results: pytest-benchmark leaves out fixtures with errors."""
    fixture = _fixture(item)
    if fixture is not None:
        fixture.has_error = True


def set_params(item: pytest.Item, params: dict[str, Any]) -> None:
    """Before the case runs (its metadata copies them): plain JSON instead of the Case object."""
    fixture = _fixture(item)
    if fixture is not None:
        fixture.params = params


def record_what_ran(item: pytest.Item, warmup: int) -> None:
    """After the case ran: its ``options`` say the rounds and warmup that pedantic mode ran, not
    the calibration settings it ignores (``min_rounds: 5`` while 20 rounds ran)."""
    fixture = _fixture(item)
    metadata = getattr(fixture, "stats", None)
    if metadata is None:  # --benchmark-disable, or the case never reached pedantic
        return
    rounds = len(metadata.stats.data)
    metadata.options.update(dict.fromkeys(_CALIBRATION_OPTIONS))
    metadata.options.update(
        mode="pedantic", rounds=rounds, min_rounds=rounds, warmup=warmup, warmup_rounds=warmup,
        iterations=1,
    )  # fmt: skip
