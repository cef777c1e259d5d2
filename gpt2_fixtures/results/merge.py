"""Join the pytest-benchmark JSON files of several shards into one result file.

Used by ``gpt2-bench merge OUT.json IN1.json IN2.json ...`` after a grid ran split over runners
(``--gpt2-shard I/N``). The merged file keeps pytest-benchmark's layout: ``machine_info``,
``commit_info``, ``datetime`` and ``version`` come from the first file, ``benchmarks`` are
concatenated in the order of the files. Files measured on different devices are refused: one result
file stands for one device, and the gate compares device with device.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpt2_fixtures.results.files import UnusableInput, atomic_write_text, load_result

EXIT_OK = 0
EXIT_UNUSABLE = 2  # the same code as `gpt2-bench compare` for unusable input


def device_name(result: dict[str, Any]) -> str | None:
    """``machine_info.gpt2.device_name`` of a result, None when the file does not record it."""
    machine_info = result.get("machine_info")
    gpt2 = machine_info.get("gpt2") if isinstance(machine_info, dict) else None
    name = gpt2.get("device_name") if isinstance(gpt2, dict) else None
    return name if isinstance(name, str) else None


def merge_results(results: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Merge (label, result) pairs into one result; raises UnusableInput on a conflict."""
    if not results:
        raise UnusableInput("nothing to merge: give at least one input file")
    _check_same_device(results)
    merged = dict(results[0][1])
    benchmarks: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for label, result in results:
        for bench in result["benchmarks"]:
            fullname = bench["fullname"]
            if fullname in seen:
                raise UnusableInput(
                    f"{label}: benchmark {fullname!r} is already in {seen[fullname]}; "
                    "each case must come from exactly one shard"
                )
            seen[fullname] = label
            benchmarks.append(bench)
    # A world-size-1 launch and an N-rank launch of the same case, merged: their ratio is the
    # scaling efficiency that neither launch could compute alone.
    from gpt2_fixtures.results.scaling import fill_scaling_efficiency

    fill_scaling_efficiency(benchmarks)
    merged["benchmarks"] = benchmarks
    return merged


def _check_same_device(results: Sequence[tuple[str, dict[str, Any]]]) -> None:
    first_label, first = results[0]
    expected = device_name(first)
    for label, result in results[1:]:
        found = device_name(result)
        if found != expected:
            raise UnusableInput(
                f"refusing to merge results from different devices: "
                f"{first_label} ran on {expected or 'an unrecorded device'}, "
                f"{label} on {found or 'an unrecorded device'}"
            )


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="merged result file to write, e.g. results.json")
    parser.add_argument(
        "inputs", type=Path, nargs="+", help="pytest-benchmark JSON files of the shards"
    )


def run_merge(args: argparse.Namespace) -> int:
    """`gpt2-bench merge OUT IN...`: returns the exit status; errors are one line on stderr."""
    out: Path = args.output
    try:
        results = [(str(path), load_result(path)) for path in args.inputs]
        merged = merge_results(results)
        text = json.dumps(merged, indent=4, allow_nan=False) + "\n"
        atomic_write_text(out, text)
    except UnusableInput as exc:
        print(f"gpt2-bench merge: error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (OSError, ValueError) as exc:
        print(f"gpt2-bench merge: error: cannot write {out}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(f"merged {len(merged['benchmarks'])} benchmarks from {len(results)} files into {out}")
    return EXIT_OK
