"""Result and baseline files: validation, environment fingerprint, atomic writes.

A baseline is an ordinary pytest-benchmark JSON result (with the per-round samples in
`stats.data`), so `--benchmark-json`, `--benchmark-autosave` storage and `gpt2-bench baseline`
files are all interchangeable. Everything that can go wrong with an input file becomes one
`UnusableInput` with a one-line message (the CLI's exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# machine_info["gpt2"] keys written by the plugin; which of them may differ between a baseline and
# a run is decided in check_environment
FINGERPRINT_KEYS = (
    "device",
    "device_name",
    "device_count",
    "bf16_supported",
    "tf32_matmul",
    "cuda_version",
    "driver_version",
    "torch",
    "transformers",
    "datasets",
    "cpu_model",
    "cpu_threads",
    "malloc",
    "python",
)


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


# --- environment fingerprint ------------------------------------------------------------------


def fingerprint(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The environment facts that decide whether two results can be compared."""
    info: Mapping[str, Any] = doc.get("machine_info") or {}
    gpt2: Mapping[str, Any] = info["gpt2"] if isinstance(info.get("gpt2"), dict) else {}
    fp: dict[str, Any] = {k: gpt2.get(k) for k in FINGERPRINT_KEYS}
    cpu: Mapping[str, Any] = info["cpu"] if isinstance(info.get("cpu"), dict) else {}
    fp["cpu_model"] = fp["cpu_model"] or cpu.get("brand_raw") or info.get("processor") or None
    fp["python"] = fp["python"] or info.get("python_version")
    fp["has_gpt2_info"] = bool(gpt2)
    return fp


def _device_label(fp: Mapping[str, Any]) -> str:
    name = fp.get("device_name") or fp.get("cpu_model") or "unknown device"
    return f"{fp.get('device') or '?'} {name}"


def check_environment(
    baseline: Mapping[str, Any], current: Mapping[str, Any], allow_device_mismatch: bool = False
) -> list[str]:
    """Notes on environment differences; raise UnusableInput when the device differs.

    The device (kind and name; the CPU model stands in on a CPU) decides comparability: a
    baseline from an A100 does not judge an H100 run. Library versions and the like only
    produce notes: a new torch is exactly the kind of change the gate should judge.
    """
    b, c = fingerprint(baseline), fingerprint(current)
    notes = [
        f"no gpt2 machine info in the {side}: device not checked"
        for side, fp in (("baseline", b), ("current run", c))
        if not fp["has_gpt2_info"]
    ]
    if b["has_gpt2_info"] and c["has_gpt2_info"]:
        b_dev, c_dev = _device_label(b), _device_label(c)
        if b_dev != c_dev:
            if not allow_device_mismatch:
                raise UnusableInput(
                    f"device differs: baseline on {b_dev}, current run on {c_dev}; "
                    "pass --allow-device-mismatch (pytest: --gpt2-allow-device-mismatch) "
                    "to compare anyway"
                )
            notes.append(f"device differs ({b_dev} vs {c_dev}): compared anyway as asked")
    for key in FINGERPRINT_KEYS:
        if key in ("device", "device_name") or b[key] is None or c[key] is None:
            continue
        if b[key] != c[key]:
            notes.append(f"{key} differs: baseline {b[key]}, current {c[key]}")
    return notes


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


# --- command line: `gpt2-bench baseline` -------------------------------------------------------


def add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("result", help="pytest-benchmark JSON (from --benchmark-json)")
    parser.add_argument("output", help="baseline file to write, e.g. baselines/cpu-tiny.json")
    parser.add_argument(
        "--allow-missing-data",
        action="store_true",
        help="accept benchmarks without per-round samples (the time test then uses mean/stddev)",
    )


def run_baseline(args: argparse.Namespace) -> int:
    """`gpt2-bench baseline RESULT OUTPUT`: validate, print the fingerprint, write atomically."""
    try:
        doc = load_result(args.result)
        lacking = missing_round_data(doc)
        if lacking and not args.allow_missing_data:
            raise UnusableInput(
                f"{args.result}: no per-round samples for {', '.join(lacking)}; "
                "run with --benchmark-json (or --benchmark-save-data) or pass --allow-missing-data"
            )
        save_result(doc, args.output)
    except UnusableInput as err:
        print(f"gpt2-bench baseline: error: {err}", file=sys.stderr)
        return 2
    fp = fingerprint(doc)
    facts = ", ".join(f"{k}={fp[k]}" for k in FINGERPRINT_KEYS if fp[k] is not None)
    print(f"wrote {args.output}: {len(doc['benchmarks'])} benchmarks; {facts}")
    return 0
