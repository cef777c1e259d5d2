"""`gpt2-bench baseline`: one result kept, or several processes pooled into a calibrated one.

Reading, validating and writing the files lives in :mod:`gpt2_fixtures.results.files`; what
decides comparability, in :mod:`gpt2_fixtures.results.fingerprint`.
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
from gpt2_fixtures.results.fingerprint import (
    FINGERPRINT_KEYS,
    STACK_KEYS,
    check_environment,
    fingerprint,
)
from gpt2_fixtures.results.gate import samples
from gpt2_fixtures.results.metrics import (
    COUNTERS,
    METRICS,
    NORMALISED,
    TIME,
    Metric,
)

# --- calibrated baselines: several processes pooled ---------------------------------------------


# A process whose control-normalised steps sit this far from the median process's (median over
# the grid) looks contended: its spread is left out of the calibration (three processes or more)
# and `baseline` advises recording it again. Identical processes here sit within 1-3%
# (docs/gate.md, "Baselines"). A robust scale such as the median absolute deviation is no
# remedy with three processes: it is the smaller of two deviations, about half the std.
CONTENDED = 0.10


def _rel_spread(values: Sequence[float]) -> float:
    """Between-process spread: the sample std of per-process values over their mean."""
    return statistics.stdev(values) / abs(statistics.fmean(values))


def _rounds_of(bench: Mapping[str, Any], metric: Metric, around: bool) -> list[float] | None:
    raw = NORMALISED_KEYS.get(metric.key)
    if raw is not None:
        return samples.normalised_rounds(bench, METRICS[raw], around)
    if metric is TIME or metric.rounds_key:
        return samples.metric_rounds(bench, metric)
    return None


def _per_process(entries: Sequence[Mapping[str, Any]], metric: Metric) -> list[float] | None:
    """One value per process: the median of its rounds where the gate judges rounds (raw or
    normalised by the control), else its extra_info value."""
    values = []
    around = samples.has_control_around(*entries)  # one basis for every process, as the gate
    for e in entries:
        rounds = _rounds_of(e, metric, around)
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
    _refuse_mixtures(docs, labels)
    for label, have in zip(labels, names, strict=True):
        for other in names[0] ^ have:
            raise UnusableInput(
                f"{label}: benchmark {other} is not in every result: pool runs of one grid"
            )
    pooled = pooling.pool_results(docs, labels[0])
    if calibrate:
        kept = _uncontended(docs, labels)
        pooled[samples.CALIBRATION_KEY] = {
            "processes": len(docs),
            "spread_from": [label for label, _ in kept],
            "spread": "the sample standard deviation over the processes in spread_from of each "
            "process's median of rounds (its extra_info value where no rounds), as a fraction "
            "of their mean",
            "benchmarks": {
                f: _spreads(v) for f, v in pooling.by_fullname([d for _, d in kept]).items()
            },
        }
    failed = [c for d in docs for c in files.failed_cases(d)]
    if failed:
        raise UnusableInput(
            f"{labels[0]}...: {failed[0]['name']} failed in a run ({failed[0]['reason']}): "
            "a baseline needs every case measured"
        )
    return pooled


# what a benchmark entry says it measured: entries that differ in these never pool
CASE_KEYS = ("device_name", "model", "dtype", "batch_size", "seq_len", "control_kind")


def _refuse_mixtures(docs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> None:
    """UnusableInput naming the files and what differs, when the processes are not one setup
    and stack, or one run is given twice."""
    first, label0 = fingerprint(docs[0]), labels[0]
    for doc, label in zip(docs[1:], labels[1:], strict=True):
        check_environment(docs[0], doc)  # the device and the measuring setup
        fp = fingerprint(doc)
        for key in STACK_KEYS:  # setups that differ were refused just above
            if fp[key] != first[key]:
                raise UnusableInput(
                    f"{label0} and {label}: {key} differs ({first[key]} vs {fp[key]}): pool "
                    "processes of one setup and stack"
                )
    seen: dict[str, str] = {}
    for doc, label in zip(docs, labels, strict=True):
        key = _run_identity(doc)
        if key in seen:
            raise UnusableInput(
                f"{seen[key]} and {label} are the same run: pool separate processes"
            )
        seen[key] = label
    for fullname, entries in pooling.by_fullname(docs).items():
        for key in CASE_KEYS:
            values = {repr(samples.info(e).get(key)) for e in entries}
            if len(values) > 1:
                raise UnusableInput(
                    f"{', '.join(labels)}: benchmark {fullname}: {key} differs between the "
                    f"results ({', '.join(sorted(values))}): pool runs of one grid"
                )


def _run_identity(doc: Mapping[str, Any]) -> str:
    """What no two separate processes share: their start time and their first rounds."""
    first = doc["benchmarks"][0] if doc["benchmarks"] else {}
    return repr((doc.get("datetime"), first.get("stats", {}).get("data")))


def contended(docs: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[tuple[str, float]]:
    """(label, shift) of the processes whose control-normalised step medians sit, over the
    grid, more than CONTENDED from the median process's: runs disturbed by other work."""
    shifts: dict[str, list[float]] = {label: [] for label in labels}
    for entries in pooling.by_fullname(docs).values():
        medians = [_ratio_median(e) for e in entries]
        if any(m is None for m in medians) or len(medians) != len(labels):
            continue
        center = statistics.median(medians)  # type: ignore[type-var]
        for label, m in zip(labels, medians, strict=True):
            shifts[label].append(m / center - 1)  # type: ignore[operator]
    typical = {label: statistics.median(v) for label, v in shifts.items() if v}
    return [(label, m) for label, m in typical.items() if abs(m) > CONTENDED]


def _uncontended(
    docs: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> list[tuple[str, Mapping[str, Any]]]:
    """The processes the spread is estimated from: all, but one contended process of three or
    more is left out (it would raise every threshold; its rounds stay in the pool)."""
    pairs = list(zip(labels, docs, strict=True))
    flagged = [label for label, _ in contended(docs, labels)]
    if len(docs) < 3 or len(flagged) != 1:
        return pairs
    return [(label, doc) for label, doc in pairs if label != flagged[0]]


def _ratio_median(entry: Mapping[str, Any]) -> float | None:
    ratios = samples.control_ratios(entry) or samples.round_times(entry)
    return statistics.median(ratios) if ratios else None


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
    for label, shift in contended(docs, inputs) if len(docs) > 1 else []:
        print(
            f"warning: {label} looks contended: its steps against the control sit {shift:+.0%} "
            f"from the median process's over the grid (more than {CONTENDED:.0%}); one such "
            "process of three or more is left out of the spread; record it again on a quiet "
            "machine"
        )
    for line in counter_disagreements(docs) if len(docs) > 1 else []:
        print(f"warning: {line}")
    return 0


def counter_disagreements(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Exact counters that differ between the processes of one benchmark: the pooled baseline
    keeps their median, but identical processes should agree (docs/measuring.md)."""
    lines = []
    for entries in pooling.by_fullname(docs).values():
        for metric in COUNTERS:
            values = [samples.info(e).get(metric.key) for e in entries]
            if None not in values and len(set(values)) > 1:
                shown = "/".join(f"{v:g}" for v in values)
                lines.append(
                    f"{entries[0]['name']}: {metric.key} differs between processes ({shown}): "
                    "not exact on this machine; the baseline keeps the median"
                )
    return lines
