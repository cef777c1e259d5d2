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
    validate_result(doc, str(p))
    return doc


def validate_result(doc: Any, label: str) -> None:
    """Check the shape the gate relies on; raise UnusableInput naming the first problem."""
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UnusableInput(f"{label}: not a pytest-benchmark result (no 'benchmarks' list)")
    if not doc["benchmarks"]:
        raise UnusableInput(f"{label}: holds no benchmarks")
    if "machine_info" in doc and not isinstance(doc["machine_info"], dict):
        raise UnusableInput(f"{label}: 'machine_info' is not an object")
    seen: set[str] = set()
    for i, bench in enumerate(doc["benchmarks"]):
        problem = _entry_problem(bench)
        if problem:
            raise UnusableInput(f"{label}: benchmark #{i} {problem}")
        if bench["fullname"] in seen:
            raise UnusableInput(f"{label}: benchmark {bench['fullname']!r} appears twice")
        seen.add(bench["fullname"])


def _entry_problem(bench: Any) -> str:
    if not isinstance(bench, dict):
        return "is not an object"
    for key in ("name", "fullname"):
        if not isinstance(bench.get(key), str):
            return f"has no {key!r}"
    stats = bench.get("stats")
    if not isinstance(stats, dict):
        return f"({bench['name']}) has no 'stats'"
    for key in ("median", "mean"):
        value = stats.get(key)
        if not (isinstance(value, int | float) and math.isfinite(value)):
            return f"({bench['name']}) has no numeric 'stats.{key}'"
    if "extra_info" in bench and not isinstance(bench["extra_info"], dict | type(None)):
        return f"({bench['name']}) has an 'extra_info' that is not an object"
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


def save_result(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Validate and write a result (e.g. a baseline) atomically, as pytest-benchmark lays it out."""
    validate_result(doc, str(path))
    text = json.dumps(doc, indent=4, sort_keys=False, allow_nan=False) + "\n"
    atomic_write_text(Path(path), text)


def missing_round_data(doc: Mapping[str, Any]) -> list[str]:
    """Names of benchmarks saved without per-round samples (`stats.data`)."""
    return [b["name"] for b in doc["benchmarks"] if not (b["stats"].get("data") or [])]
