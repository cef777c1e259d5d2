"""What became of each case, kept in the results: the failed cases (out of memory or an error,
with the reason) and the cases that -k, -m or --gpt2-shard deselected.

Written as the ``gpt2_bench`` section of the result file through pytest-benchmark's
``pytest_benchmark_update_json`` hook (its own readers ignore unknown keys), and so also into the
document the end-of-session gate judges and ``--gpt2-save-baseline`` writes.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpt2_fixtures.bench import measure, workbench
from gpt2_fixtures.bench.distributed import DistCase
from gpt2_fixtures.config import Case
from gpt2_fixtures.plugin import benchmark_session
from gpt2_fixtures.plugin.fixtures import BENCH, SETTINGS, USER_ERRORS, device

SECTION = "gpt2_bench"
SECTION_VERSION = "0.3.0"  # the layout of the section (README, "What each case records")
OOM, ERROR = "oom", "error"
_REASON_CHARS = 300


@dataclass
class Outcomes:
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_selected: list[str] = field(default_factory=list)
    # --gpt2-shard I/N: {"index": I, "count": N, "others": node ids of the other shards}
    shard: dict[str, Any] | None = None

    def section(self) -> dict[str, Any]:
        section: dict[str, Any] = {
            "version": SECTION_VERSION,
            "failed": [dict(f) for f in self.failed],
            "not_selected": list(dict.fromkeys(self.not_selected)),
        }
        if self.shard is not None:
            section["shard"] = dict(self.shard)
        return section


_OUTCOMES = pytest.StashKey[Outcomes]()


def outcomes(config: pytest.Config) -> Outcomes:
    if _OUTCOMES not in config.stash:
        config.stash[_OUTCOMES] = Outcomes()
    return config.stash[_OUTCOMES]


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    """-k and -m (pytest's own deselection) and --gpt2-shard (ours) all report here."""
    if items:
        outcomes(items[0].config).not_selected.extend(item.nodeid for item in items)


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    output_json[SECTION] = outcomes(config).section()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    name = type(exc).__name__
    line = first if isinstance(exc, (*USER_ERRORS, pytest.fail.Exception)) else f"{name}: {first}"
    return (line.rstrip(": ") or name)[:_REASON_CHARS]


def _record(item: pytest.Item, kind: str, reason: str, peak: float | None = None) -> None:
    if "benchmark" not in getattr(item, "fixturenames", ()):
        return  # only benchmark cases belong in the results
    entry = {"name": item.name, "fullname": item.nodeid, "kind": kind, "reason": reason}
    outcomes(item.config).failed.append(entry | {"peak_memory_mb": peak})


def case_params(item: pytest.Item) -> dict[str, Any] | None:
    """The case's plain fields for the JSON's ``params`` (pytest-benchmark would write
    ``UNSERIALIZABLE[Case(...)]``)."""
    funcargs = getattr(item, "funcargs", {})
    dcase = funcargs.get("gpt2_dist_case")
    if isinstance(dcase, DistCase):
        return dcase.case.params() | {"strategy": dcase.strategy, "world_size": dcase.world_size}
    case = funcargs.get("gpt2_case")
    return case.params() if isinstance(case, Case) else None


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A case that fails keeps no time and is recorded; user errors are one line; out of memory
    skips that case and the grid goes on."""
    params = case_params(pyfuncitem)
    if params is not None:
        benchmark_session.set_params(pyfuncitem, params)
    try:
        result = yield
    except USER_ERRORS as exc:
        benchmark_session.drop_timing(pyfuncitem)
        _record(pyfuncitem, ERROR, one_line(exc))
        pytest.fail(f"{exc}", pytrace=False)
    except workbench.OUT_OF_MEMORY as exc:
        benchmark_session.drop_timing(pyfuncitem)
        message = workbench.out_of_memory_message(_case_name(pyfuncitem), exc)
        peak = measure.peak_memory_mb(device(pyfuncitem.config))
        _record(pyfuncitem, OOM, one_line(exc), peak)
    except BaseException as exc:
        benchmark_session.drop_timing(pyfuncitem)  # e.g. a NaN loss after timing: never a time
        if isinstance(exc, (Exception, pytest.fail.Exception)):  # not a skip or an interrupt
            _record(pyfuncitem, ERROR, one_line(exc))
        raise
    else:
        if params is not None and SETTINGS in pyfuncitem.config.stash:
            warmup = pyfuncitem.config.stash[SETTINGS].warmup
            benchmark_session.record_what_ran(pyfuncitem, warmup)
        return result
    # Outside the except block the exception (and the tensors its frames hold) is released.
    bench = pyfuncitem.config.stash.get(BENCH, None)
    if bench is not None:
        bench.free_model()
    pytest.skip(message)


def _case_name(item: pytest.Function) -> str:
    """The case id (``sdpa-fp32-b8-s512``), whichever parameter holds it."""
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None else item.name
