"""Baselines: the environment fingerprint that decides comparability, and `gpt2-bench baseline`.

Reading, validating and writing the files lives in :mod:`gpt2_fixtures.results.files`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from gpt2_fixtures.results import files, pooling
from gpt2_fixtures.results.files import (
    UnusableInput,
    load_result,
    missing_round_data,
    save_result,
)
from gpt2_fixtures.results.gate import samples
from gpt2_fixtures.results.metrics import (
    METRICS,
    NORMALISED,
    TIME,
    Metric,
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


# --- calibrated baselines: several processes pooled ---------------------------------------------


def _rel_spread(values: Sequence[float]) -> float:
    """Between-process spread: the sample std of per-process values over their mean."""
    return statistics.stdev(values) / abs(statistics.fmean(values))


def _rounds_of(bench: Mapping[str, Any], metric: Metric) -> list[float] | None:
    raw = NORMALISED_KEYS.get(metric.key)
    if raw is not None:
        return samples.normalised_rounds(bench, METRICS[raw])
    if metric is TIME or metric.rounds_key:
        return samples.metric_rounds(bench, metric)
    return None


def _per_process(entries: Sequence[Mapping[str, Any]], metric: Metric) -> list[float] | None:
    """One value per process: the median of its rounds where the gate judges rounds (raw or
    normalised by the control), else its extra_info value."""
    values = []
    for e in entries:
        rounds = _rounds_of(e, metric)
        if rounds is not None:
            values.append(statistics.median(rounds))
            continue
        value = None if metric.test == "rounds" else samples.info(e).get(metric.key)
        if value is None:
            return None
        values.append(float(value))
    return values


NORMALISED_KEYS = {norm.key: raw for raw, norm in NORMALISED.items()}


def _spreads(entries: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per metric, the between-process spread as a fraction of the metric."""
    out: dict[str, float] = {}
    for metric in METRICS.values():
        values = _per_process(entries, metric)
        if values is None or len(values) < 2:
            continue
        if all(v > 0 for v in values):
            out[metric.key] = _rel_spread(values)
    return out


def pool_results(
    docs: Sequence[Mapping[str, Any]], labels: Sequence[str], calibrate: bool = True
) -> dict[str, Any]:
    """One calibrated baseline from results of the same grid made by separate processes: the
    rounds pooled (with every per-round list of extra_info), and per benchmark the
    between-process spread of every metric (``calibrate=False``: the pooled rounds only)."""
    names = [{b["fullname"] for b in d["benchmarks"]} for d in docs]
    for doc, label, have in zip(docs, labels, names, strict=True):
        check_environment(docs[0], doc)
        for other in names[0] ^ have:
            raise UnusableInput(
                f"{label}: benchmark {other} is not in every result: pool runs of one grid"
            )
    by_name = pooling.by_fullname(docs)
    pooled = pooling.pool_results(docs, labels[0])
    if calibrate:
        pooled[samples.CALIBRATION_KEY] = {
            "processes": len(docs),
            "spread": "sample std over processes of each process's median of rounds (its "
            "extra_info value where no rounds), as a fraction of their mean",
            "benchmarks": {f: _spreads(v) for f, v in by_name.items()},
        }
    failed = [c for d in docs for c in files.failed_cases(d)]
    if failed:
        raise UnusableInput(
            f"{labels[0]}...: {failed[0]['name']} failed in a run ({failed[0]['reason']}): "
            "a baseline needs every case measured"
        )
    return pooled


# --- command line: `gpt2-bench baseline` -------------------------------------------------------


def add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [-h] [--allow-missing-data] RESULT [RESULT ...] OUTPUT"
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="pytest-benchmark JSON results (from --benchmark-json), then the baseline file to "
        "write, e.g. baselines/cpu-tiny.json. Several results of the same grid from separate "
        "processes make a calibrated baseline",
    )
    parser.add_argument(
        "--allow-missing-data",
        action="store_true",
        help="accept benchmarks without per-round samples (the time test then uses mean/stddev)",
    )


def run_baseline(args: argparse.Namespace) -> int:
    """`gpt2-bench baseline RESULT... OUTPUT`: validate, pool several results (calibrated),
    print the fingerprint, write atomically."""
    try:
        if len(args.paths) < 2:
            raise UnusableInput("expected RESULT... OUTPUT: at least one result and the output")
        *inputs, output = args.paths
        docs = [load_result(p) for p in inputs]
        for path, doc in zip(inputs, docs, strict=True):
            lacking = missing_round_data(doc)
            if lacking and (len(docs) > 1 or not args.allow_missing_data):
                raise UnusableInput(
                    f"{path}: no per-round samples for {', '.join(lacking)}; run with "
                    "--benchmark-json (or --benchmark-save-data)"
                    + ("" if len(docs) > 1 else " or pass --allow-missing-data")
                )
        doc = pool_results(docs, inputs) if len(docs) > 1 else docs[0]
        save_result(doc, output)
    except UnusableInput as err:
        print(f"gpt2-bench baseline: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # never a traceback for bad input
        print(f"gpt2-bench baseline: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    fp = fingerprint(doc)
    facts = ", ".join(f"{k}={fp[k]}" for k in FINGERPRINT_KEYS if fp[k] is not None)
    kind = f"calibrated from {len(docs)} processes" if len(docs) > 1 else "uncalibrated (1 run)"
    print(f"wrote {output}: {len(doc['benchmarks'])} benchmarks, {kind}; {facts}")
    return 0
