"""Result files as pytest-benchmark writes them: load, validate, and one atomic writer.

A baseline is an ordinary pytest-benchmark JSON result (with the per-round samples in
`stats.data`), so `--benchmark-json`, `--benchmark-autosave` storage and `gpt2-bench baseline`
files are all interchangeable. Everything that can go wrong with an input file becomes one
`UnusableInput` with a one-line message (the CLI's exit status 2).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpt2_fixtures.results import numbers
from gpt2_fixtures.results.metrics import EXTRA_METRICS, OPS_BY_NAME, ROUND_LIST_KEYS

# the top-level section of a calibrated baseline: its between-process spreads
CALIBRATION_KEY = "gpt2_calibration"


class UnusableInput(Exception):
    """An input that cannot be gated on; str() is one line that says why."""


# --- reading and validating -------------------------------------------------------------------


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a pytest-benchmark JSON result; raise UnusableInput with the reason."""
    p = Path(path)
    if not p.exists():
        raise UnusableInput(f"{p}: no such file")
    if p.is_dir():
        raise UnusableInput(f"{p}: is a directory, expected a pytest-benchmark JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UnusableInput(f"{p}: not a text file, expected pytest-benchmark JSON") from None
    except OSError as err:
        raise UnusableInput(f"{p}: cannot read ({err.strerror})") from None
    if not text.strip():
        raise UnusableInput(f"{p}: empty file, expected pytest-benchmark JSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise UnusableInput(f"{p}: not valid JSON ({err.msg} at {where}); truncated?") from None
    except RecursionError:
        raise UnusableInput(f"{p}: JSON nested too deeply") from None
    validate_result(doc, str(p))
    return doc


def validate_result(doc: Any, label: str) -> None:
    """Check every field the gate reads; raise UnusableInput naming the file and benchmark.

    Times and rates must be finite and > 0, standard deviations finite and >= 0, `stats.rounds`
    a positive integer equal to the number of per-round samples, and every per-round list of
    `extra_info` aligned with `stats.data`.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UnusableInput(f"{label}: not a pytest-benchmark result (no 'benchmarks' list)")
    failed = _gpt2_bench_problem(doc.get("gpt2_bench"))
    if failed:
        raise UnusableInput(f"{label}: gpt2_bench section: {failed}")
    if not doc["benchmarks"] and not (doc.get("gpt2_bench") or {}).get("failed"):
        raise UnusableInput(f"{label}: holds no benchmarks")
    if "machine_info" in doc and not isinstance(doc["machine_info"], dict):
        raise UnusableInput(f"{label}: 'machine_info' is not an object")
    problem = _calibration_problem(doc.get(CALIBRATION_KEY))
    if problem:
        raise UnusableInput(f"{label}: {CALIBRATION_KEY}: {problem}")
    seen: set[str] = set()
    for i, bench in enumerate(doc["benchmarks"]):
        problem = _entry_problem(bench)
        if problem:
            name = bench.get("name") if isinstance(bench, dict) else None
            where = f"benchmark {name}" if isinstance(name, str) else f"benchmark #{i}"
            raise UnusableInput(f"{label}: {where}: {problem}")
        if bench["fullname"] in seen:
            raise UnusableInput(f"{label}: benchmark {bench['fullname']!r} appears twice")
        seen.add(bench["fullname"])


def _number_problem(key: str, value: Any, positive: bool, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not numbers.is_finite(value):
        return f"{key} is {json.dumps(value) if _jsonable(value) else type(value).__name__}"
    if positive and not value > 0:
        return f"{key} is {value!r}, expected > 0"
    if not positive and value < 0:
        return f"{key} is {value!r}, expected >= 0"
    return ""


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


def _entry_problem(bench: Any) -> str:
    if not isinstance(bench, dict):
        return "is not an object"
    for key in ("name", "fullname"):
        if not isinstance(bench.get(key), str):
            return f"has no {key!r}"
    stats = bench.get("stats")
    if not isinstance(stats, dict):
        return "has no 'stats'"
    if "extra_info" in bench and not isinstance(bench["extra_info"], dict | type(None)):
        return "has an 'extra_info' that is not an object"
    return _stats_problem(stats) or _extra_problem(bench.get("extra_info") or {}, stats)


def _stats_problem(stats: Mapping[str, Any]) -> str:
    for key in ("median", "mean"):
        problem = _number_problem(f"stats.{key}", stats.get(key), positive=True)
        if problem:
            return problem
    data = stats.get("data")
    rounds = stats.get("rounds")
    if not (isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0):
        shown = json.dumps(rounds) if _jsonable(rounds) else type(rounds).__name__
        return f"stats.rounds is {shown}, expected a positive integer"
    if data is None:
        return _number_problem("stats.stddev", stats.get("stddev"), positive=False)
    if not isinstance(data, list) or not data:
        return "stats.data is not a non-empty list"
    if rounds != len(data):
        return f"stats.rounds is {rounds} but stats.data holds {len(data)} rounds"
    for i, x in enumerate(data):
        problem = _number_problem(f"stats.data[{i}]", x, positive=True)
        if problem:
            return problem
    return _number_problem("stats.stddev", stats.get("stddev"), positive=False, optional=True)


def _calibration_problem(section: Any) -> str:
    """A calibrated baseline's spreads: {processes: n >= 2, benchmarks: {fullname: {metric:
    finite spread >= 0}}}, or '' (also when there is no such section)."""
    if section is None:
        return ""
    if not isinstance(section, dict):
        return "is not an object"
    n = section.get("processes")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 2):
        return f"processes is {json.dumps(n) if _jsonable(n) else type(n).__name__}, expected >= 2"
    benchmarks = section.get("benchmarks")
    if not isinstance(benchmarks, dict):
        return "benchmarks is not an object"
    for fullname, spreads in benchmarks.items():
        problem = _counts_problem(f"benchmark {fullname}: spreads", spreads)
        if problem:
            return problem
    return ""


def _extra_problem(info: Mapping[str, Any], stats: Mapping[str, Any]) -> str:
    for key in ("batch_size", "seq_len"):  # rates are computed from them
        value = info.get(key)
        if value is not None and not (numbers.is_finite(value) and value > 0):
            return _number_problem(f"extra_info.{key}", value, positive=True) or (
                f"extra_info.{key} is {value!r}, expected > 0"
            )
    for metric in EXTRA_METRICS:
        # times and rates must be positive; memory may be 0 (nothing allocated), and a
        # footprint is a difference of two readings, so only finiteness is asked of it
        positive = metric.test not in ("effect", "counter")
        value = info.get(metric.key)
        problem = _number_problem(f"extra_info.{metric.key}", value, positive, optional=True)
        if problem and not (metric.key == "footprint_memory_mb" and numbers.is_finite(value)):
            return problem
        problem = _number_problem(
            f"extra_info.{metric.std_key}", info.get(metric.std_key), False, optional=True
        )
        if problem:
            return problem
    problem = _ops_problem(info.get(OPS_BY_NAME))
    if problem:
        return problem
    data = stats.get("data")
    for key in ROUND_LIST_KEYS:
        values = info.get(key)
        if values is None:
            continue
        if not isinstance(values, list):
            return f"extra_info.{key} is not a list"
        if data is not None and len(values) != len(data):
            return f"extra_info.{key} holds {len(values)} values for {len(data)} rounds"
        for i, x in enumerate(values):
            problem = _number_problem(f"extra_info.{key}[{i}]", x, positive=True)
            if problem:
                return problem
        pairs = zip(data or [], values, strict=False)
        if key.startswith("control_") and not all(math.isfinite(t / c) for t, c in pairs):
            return f"extra_info.{key} is too small to divide by (ratio overflows)"
    return ""


def _ops_problem(ops: Any) -> str:
    """``extra_info.ops_by_name``, where recorded: operator name -> a count >= 0."""
    return "" if ops is None else _counts_problem(f"extra_info.{OPS_BY_NAME}", ops)


def _counts_problem(label: str, values: Any) -> str:
    """An object of numbers >= 0: a benchmark's calibrated spreads, a count per operator."""
    if not isinstance(values, dict):
        return f"{label} is not an object"
    for key, value in values.items():
        problem = _number_problem(f"{label}[{key!r}]", value, positive=False)
        if problem:
            return problem
    return ""


FAILED_KINDS = ("oom", "error")


def _gpt2_bench_problem(section: Any) -> str:
    """The `gpt2_bench` section the plugin writes (failed and not-selected cases), or ''."""
    if section is None:
        return ""
    if not isinstance(section, dict):
        return "is not an object"
    failed = section.get("failed", [])
    if not isinstance(failed, list):
        return "'failed' is not a list"
    for i, case in enumerate(failed):
        if not isinstance(case, dict) or not all(
            isinstance(case.get(k), str) for k in ("name", "fullname", "reason")
        ):
            return f"failed[{i}] needs string name, fullname and reason"
        if case.get("kind") not in FAILED_KINDS:
            return f"failed[{i}] ({case['name']}): kind {case.get('kind')!r} is not oom or error"
        problem = _number_problem("peak_memory_mb", case.get("peak_memory_mb"), False, True)
        if problem:
            return f"failed[{i}] ({case['name']}): {problem}"
    selected = section.get("not_selected", [])
    if not isinstance(selected, list) or not all(isinstance(x, str) for x in selected):
        return "'not_selected' is not a list of node ids"
    for key in ("shard", "shards"):
        if key in section and not isinstance(section[key], dict):
            return f"'{key}' is not an object"
    return ""


# --- writing ---------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and os.replace, so a reader never sees a
    half-written file and a crash leaves the old file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """atomic_write_text, with any failure as one UnusableInput line naming the file."""
    p = Path(path)
    if p.is_dir():
        raise UnusableInput(f"{p}: is a directory, expected a file to write")
    try:
        atomic_write_text(p, text)
    except OSError as err:
        raise UnusableInput(f"{p}: cannot write ({err.strerror or err})") from None


def save_result(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Validate and write a result (e.g. a baseline) atomically, as pytest-benchmark lays it out."""
    validate_result(doc, str(path))
    write_text(path, json.dumps(doc, indent=4, sort_keys=False, allow_nan=False) + "\n")


def failed_cases(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cases the plugin recorded as out of memory or failed (`gpt2_bench.failed`)."""
    return list((doc.get("gpt2_bench") or {}).get("failed") or [])


def shards(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``gpt2_bench.shards`` record of a sharded run or merge: {"count": N, "present": [i],
    "missing": [i]}; {} for an unsharded run."""
    record = (doc.get("gpt2_bench") or {}).get("shards")
    return record if isinstance(record, dict) else {}


def not_selected(doc: Mapping[str, Any]) -> set[str]:
    """Node ids deselected by -k, -m or --gpt2-shard in that run (`gpt2_bench.not_selected`)."""
    return set((doc.get("gpt2_bench") or {}).get("not_selected") or [])


def missing_round_data(doc: Mapping[str, Any]) -> list[str]:
    """Names of benchmarks saved without per-round samples (`stats.data`)."""
    return [b["name"] for b in doc["benchmarks"] if not (b["stats"].get("data") or [])]
