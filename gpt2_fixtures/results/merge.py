"""Join the pytest-benchmark JSON files of several shards into one result file.

Used by ``gpt2-bench merge -o OUT.json IN1.json IN2.json ...`` after a grid ran split over runners
(``--gpt2-shard I/N``). The merged file keeps pytest-benchmark's layout: ``machine_info``,
``commit_info``, ``datetime`` and ``version`` come from the first file, ``benchmarks`` are
concatenated in the order of the files, and the ``gpt2_bench`` section joins the inputs' (failed
cases: all of them; not selected: cases no input selected). Files measured on different devices are
refused: one result file stands for one device, and the gate compares device with device.

The output is always named with ``-o``, and an existing file is replaced only when it was merged
from the same inputs before (``merged_from``) or ``--force`` is given: a mistyped command must not
turn a full result into a two-case one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpt2_fixtures.results.files import UnusableInput, atomic_write_text, load_result
from gpt2_fixtures.results.scaling import fill_scaling_efficiency

EXIT_OK = 0
EXIT_UNUSABLE = 2  # the same code as `gpt2-bench compare` for unusable input
SECTION = "gpt2_bench"  # written by the plugin (failed and deselected cases)
MERGED_FROM = "merged_from"  # input paths relative to the output's folder


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
    fill_scaling_efficiency(benchmarks)
    merged["benchmarks"] = benchmarks
    merged.pop(SECTION, None)
    section = merge_sections([r for _, r in results], set(seen))
    if section is not None:
        merged[SECTION] = section
    return merged


def _shard_set(sections: Sequence[dict[str, Any]], present: set[str]) -> dict[str, Any] | None:
    """The shard set the inputs came from: {"count", "present", "missing", "lost"}: ``lost``
    are the cases of shards that never arrived (missing, not deselected). None when no input
    was a shard; UnusableInput when the inputs split the grid differently."""
    shards = [s["shard"] for s in sections if isinstance(s.get("shard"), dict)]
    if not shards:
        return None
    counts = {int(s["count"]) for s in shards}
    if len(counts) > 1 or len(shards) != len(sections):
        raise UnusableInput(
            "the inputs split the grid differently (--gpt2-shard counts "
            f"{sorted(counts)}, or some inputs are not shards): merge the shards of one run"
        )
    count = counts.pop()
    indexes = [int(s["index"]) for s in shards]
    if len(set(indexes)) != len(indexes):
        raise UnusableInput(f"shard {max(indexes, key=indexes.count)}/{count} is given twice")
    missing = sorted(set(range(1, count + 1)) - set(indexes))
    others = {name for s in shards for name in s.get("others") or []}
    return {
        "count": count,
        "present": sorted(indexes),
        "missing": missing,
        "lost": sorted(others - present) if missing else [],
    }


def merge_sections(results: Sequence[dict[str, Any]], present: set[str]) -> dict[str, Any] | None:
    """The inputs' ``gpt2_bench`` sections joined: failed = union (by fullname); not_selected =
    deselected in every input that has a section and measured or failed in none."""
    sections = [r[SECTION] for r in results if isinstance(r.get(SECTION), dict)]
    if not sections:
        return None  # older files: nothing to join, and nothing invented
    failed: dict[str, Any] = {}
    for section in sections:
        for entry in section.get("failed") or []:
            if isinstance(entry, dict):
                failed.setdefault(str(entry.get("fullname") or entry.get("name")), entry)
    present = present | set(failed)
    lists = [set(s.get("not_selected") or []) for s in sections]
    first_order = list(sections[0].get("not_selected") or [])
    shards = _shard_set(sections, present)
    # the cases of a shard that never arrived are missing (the gate fails them), not deselected
    lost = set(shards["lost"]) if shards else set()
    common = set.intersection(*lists) - present - lost
    merged = {
        **sections[0],
        "failed": list(failed.values()),
        "not_selected": [name for name in first_order if name in common],
    }
    merged.pop("shard", None)
    if shards:
        merged["shards"] = {k: v for k, v in shards.items() if k != "lost"}
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


def _relative_inputs(inputs: Sequence[Path], out: Path) -> list[str]:
    where = out.resolve().parent
    return [Path(os.path.relpath(p.resolve(), where)).as_posix() for p in inputs]


def check_output(out: Path, inputs: Sequence[Path], force: bool) -> None:
    """Refuse to replace an existing file unless it is a merge of the same inputs (or --force)."""
    if force or not out.exists():
        return
    try:
        previous = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get(MERGED_FROM) == _relative_inputs(inputs, out):
        return
    raise UnusableInput(
        f"{out} exists and is not a merge of these inputs; choose another -o or add --force"
    )


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="merged result file to write, e.g. results.json (never one of the inputs)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace OUTPUT even if it is not an earlier merge"
    )
    parser.add_argument(
        "inputs", type=Path, nargs="+", help="pytest-benchmark JSON files of the shards"
    )


def run_merge(args: argparse.Namespace) -> int:
    """`gpt2-bench merge -o OUT IN...`: returns the exit status; errors are one line on stderr."""
    out: Path = args.output
    try:
        check_output(out, args.inputs, args.force)
        results = [(str(path), load_result(path)) for path in args.inputs]
        merged = merge_results(results)
        merged[MERGED_FROM] = _relative_inputs(args.inputs, out)
        text = json.dumps(merged, indent=4, allow_nan=False) + "\n"
        atomic_write_text(out, text)
    except UnusableInput as exc:
        print(f"gpt2-bench merge: error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (OSError, ValueError) as exc:
        print(f"gpt2-bench merge: error: cannot write {out}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(f"merged {len(merged['benchmarks'])} benchmarks from {len(results)} files into {out}")
    shards = (merged.get(SECTION) or {}).get("shards") or {}
    for index in shards.get("missing") or []:
        print(
            f"warning: shard {index}/{shards['count']} is absent: its cases count as missing "
            "(the gate fails them)",
            file=sys.stderr,
        )
    return EXIT_OK
