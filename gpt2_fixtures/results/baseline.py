"""Baselines: the environment fingerprint that decides comparability, and `gpt2-bench baseline`.

Reading, validating and writing the files lives in :mod:`gpt2_fixtures.results.files`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from gpt2_fixtures.results.files import (
    UnusableInput,
    load_result,
    missing_round_data,
    save_result,
)

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
