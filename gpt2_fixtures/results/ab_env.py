"""`gpt2-bench ab` across two Python environments: a torch, CUDA or transformers upgrade.

The twin control shares the software stack, so a release that slows every operator slows the twin
as much as the step and the ratio hides it. Across environments the A/B is judged on raw
wall-clock, with the interleaving (A B B A ...) as the machine control; the twin's ratio is still
shown, not judged. Why and what each comparison can see: docs/upgrades.md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gpt2_fixtures.results import baseline, files, gate
from gpt2_fixtures.results.fingerprint import STACK_KEYS, check_environment, fingerprint
from gpt2_fixtures.results.gate.samples import CALIBRATION_KEY
from gpt2_fixtures.results.gate.stats import log_welch_p
from gpt2_fixtures.results.metrics import METRICS, NORMALISED, TIME, Metric

# Shown in the header beside the stack: code under test, not under the control, but an upgrade
# of it is what a dependency bump usually is.
LIBRARY_KEYS = ("transformers", "datasets")

# Run by each interpreter with the tree first on PYTHONPATH: the project and torch import, and
# the device torch sees (its default device, as the benchmarks' --gpt2-device auto chooses it).
PROBE = """
import json, platform, sys
import gpt2_fixtures, torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "gpt2_fixtures": gpt2_fixtures.__file__,
    "torch": str(torch.__version__),
    "device": "cuda" if cuda else "cpu",
    "device_name": torch.cuda.get_device_name(0) if cuda else platform.machine(),
    "python": platform.python_version(),
}))
"""


class EnvError(Exception):
    """An interpreter that cannot take part; str() is one line that says why."""


@dataclass(frozen=True)
class Interpreter:
    python: str  # as given (a path or a name on PATH), absolute where it is a path
    facts: Mapping[str, Any]  # what PROBE printed

    @property
    def device(self) -> str:
        return f"{self.facts.get('device')} {self.facts.get('device_name')}"


def resolve_python(python: str) -> str:
    """An interpreter path usable from any working directory (the sides run in other trees)."""
    if os.sep in python:
        path = Path(python).expanduser().absolute()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EnvError(f"{python}: no such executable interpreter")
        return str(path)
    return python


def probe(tree: Path, python: str, env: Mapping[str, str]) -> Interpreter:
    """Run PROBE with `python` in `tree`; EnvError (one line) when the project or torch does not
    import, or gpt2_fixtures comes from somewhere else than `tree` (e.g. an install)."""
    try:
        proc = subprocess.run(
            [python, "-c", PROBE], cwd=tree, env=dict(env), capture_output=True, check=False
        )
    except OSError as err:
        raise EnvError(f"{python}: cannot run it ({err.strerror or err})") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise EnvError(f"{python}: cannot import gpt2_fixtures and torch from {tree}: {lines[-1]}")
    try:
        facts = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EnvError(f"{python}: the import check printed no result") from None
    where = Path(facts["gpt2_fixtures"]).resolve()
    if not where.is_relative_to(tree.resolve()):
        raise EnvError(f"{python}: gpt2_fixtures does not import from {tree} (got {str(where)!r})")
    return Interpreter(python, facts)


def check_same_device(base: Interpreter, head: Interpreter) -> None:
    if base.device != head.device:
        raise EnvError(
            f"the interpreters see different devices: base {base.python} on {base.device}, "
            f"head {head.python} on {head.device}; an A/B needs both sides on one device"
        )


def check_writable(*paths: str | None) -> None:
    """Refuse an output path that cannot be written, before anything runs: gate's checks, then a
    real file created and removed in the nearest existing folder (as the atomic writer would)."""
    gate.check_output_paths(*paths)
    for p in filter(None, paths):
        folder = Path(p).absolute().parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise files.UnusableInput(f"{p}: {folder} is not a directory")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise files.UnusableInput(f"{p}: cannot write in {folder} ({err.strerror})") from None


# --- the verdict --------------------------------------------------------------------------------


def stack_differences(base: Mapping[str, Any], head: Mapping[str, Any]) -> list[str]:
    """``key base -> head`` for the stack and library versions that differ between the sides."""
    b, h = fingerprint(base), fingerprint(head)
    return [f"{k} {b.get(k)} -> {h.get(k)}" for k in (*STACK_KEYS, *LIBRARY_KEYS) if b[k] != h[k]]


def header(
    pythons: Mapping[str, str], base: Mapping[str, Any], head: Mapping[str, Any], runs: int
) -> list[str]:
    """What was compared, and on which basis: the first lines of the verdict."""
    b, h = fingerprint(base), fingerprint(head)
    diffs = stack_differences(base, head)
    versions = ", ".join(f"{k} {b[k]}" for k in ("torch", "transformers", "python") if b[k])
    lines = [
        f"A/B across environments: base {pythons['base']}, head {pythons['head']}, "
        f"on {b.get('device')} {b.get('device_name') or b.get('cpu_model') or ''}".rstrip(),
        (
            f"stack differs: {', '.join(diffs)}"
            if diffs
            else f"stack the same on both sides ({versions})"
        ),
        f"basis: raw wall-clock, {runs} interleaved processes a side (A B B A ...) as the machine "
        "control; the twin control shares the stack, so its ratio is shown, not judged",
    ]
    if h.get("torch") is None or b.get("torch") is None:
        lines.append("a side does not record its torch version: rerun with this gpt2-bench")
    return lines


def twin_notes(base: Mapping[str, Any], head: Mapping[str, Any], settings: Any) -> list[str]:
    """Per benchmark, what the twin-normalised gate would have said: shown, not judged."""
    twin = gate.compare(base, head, replace(settings, time_basis="auto", stack_change=()))
    key = NORMALISED[TIME.key].key
    base_by = {b["name"]: b for b in base["benchmarks"]}
    cur_by = {b["name"]: b for b in head["benchmarks"]}
    notes = []
    for row in twin.rows:
        if row.metric != key or row.change is None:
            continue
        interval = ""
        if row.change_low is not None and row.change_high is not None:
            interval = f" [{row.change_low:+.1%}, {row.change_high:+.1%}]"
        control = ""
        b_ctrl = gate.control_median(base_by.get(row.benchmark, {}))
        c_ctrl = gate.control_median(cur_by.get(row.benchmark, {}))
        if b_ctrl and c_ctrl:
            control = f", the twin itself {c_ctrl / b_ctrl - 1:+.1%}"
        notes.append(
            f"twin (not judged): {row.benchmark} {key} {row.change:+.1%}{interval}"
            f"{control}; on that ratio alone it would read {row.verdict}"
        )
    return notes


def calibrated(
    base: Mapping[str, Any],
    base_runs: Sequence[Mapping[str, Any]],
    head_runs: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], str]:
    """`base` with a calibration section from the processes of both sides, and a note; or
    `base` unchanged and why not.

    Rounds of one process share its machine state: under other load, whole processes ran 15%
    apart here with identical code, so pooled rounds alone make the interval far too narrow
    (an A/A of 3 processes a side failed at +10.9%). The process is the unit: per benchmark and
    metric, the spread of per-process medians within each side (gpt2-bench baseline's estimate),
    pooled over the two sides, so the change under test does not inflate it. The gate's
    threshold k x spread x sqrt(1 + 1/n) is for one process against n; for n against n the
    standard error is s x sqrt(2/n), so the spreads are stored scaled by sqrt(2/n) / sqrt(1+1/n).
    """
    n = min(len(base_runs), len(head_runs))
    if n < 2:
        return dict(base), "one process a side: thresholds are the uncalibrated defaults"
    sides = []
    for side, runs in (("base", base_runs), ("head", head_runs)):
        labels = [f"{side}-{i + 1}" for i in range(len(runs))]
        try:
            sides.append(baseline.pool_results(runs, labels)[CALIBRATION_KEY]["benchmarks"])
        except files.UnusableInput as err:
            return dict(base), f"not calibrated ({err}): thresholds are the uncalibrated defaults"
    scale = math.sqrt(2 / n) / math.sqrt(1 + 1 / n)
    spreads = {
        fullname: {
            key: scale * math.sqrt((value**2 + sides[1][fullname][key] ** 2) / 2)
            for key, value in metrics.items()
            if key in sides[1].get(fullname, {})
        }
        for fullname, metrics in sides[0].items()
    }
    section = {
        "processes": n,
        "spread": "A/B: the within-side between-process spread pooled over base and head, "
        "scaled by sqrt(2/n) / sqrt(1 + 1/n)",
        "benchmarks": spreads,
    }
    note = (
        f"thresholds from the processes' own spread: per benchmark max(the configured effect, "
        f"k x s x sqrt(2/{n})), s the spread of per-process medians within each side (pooled), "
        "capped as for a calibrated baseline; processes, not rounds, are the unit"
    )
    return {**base, CALIBRATION_KEY: section}, note


def _too_spread(row: gate.Row) -> gate.Row:
    """A pass or improvement at a capped threshold is not shown: the processes spread further
    than the cap (other load hit some of them), and the interval of pooled rounds does not hold
    that spread. Measured here under load: a 40% slower stand-in's generation rows read -18% and
    passed at the cap. A regression beyond the cap stays one."""
    if "capped" not in row.threshold or row.verdict not in (gate.PASS, gate.IMPROVED):
        return row
    note = (
        "not judged: this benchmark's processes spread beyond the threshold's cap (other load "
        "on the machine); rerun with more --repeats, on a quieter machine"
    )
    return replace(row, verdict=gate.INCONCLUSIVE, note="; ".join(filter(None, (row.note, note))))


@dataclass(frozen=True)
class _ProcessCheck:
    """A regression must hold between processes, not only between rounds: one-sided Welch on the
    logs of the per-process values (medians of rounds, or the extra_info value), at alpha. Under
    load on 2 cores an A/A of 5 processes a side read +65% with a rounds p far below Holm's level,
    its processes 10-38 ms apart on both sides. Fewer than 3 processes a side: not checked."""

    base_runs: Sequence[Mapping[str, Any]]
    head_runs: Sequence[Mapping[str, Any]]
    alpha: float

    def __call__(self, row: gate.Row) -> gate.Row:
        metric = METRICS.get(row.metric)
        if row.verdict != gate.REGRESSION or metric is None or metric.test == "effect":
            return row
        values = [self._per_process(runs, row.benchmark, metric) for runs in self.sides]
        if values[0] is None or values[1] is None or min(values[0] + values[1]) <= 0:
            return row
        p = log_welch_p(values[1], values[0], "greater" if metric.higher_is_worse else "less")
        if p is None or p < self.alpha:
            return row
        note = (
            f"not judged: the processes do not confirm it (p {p:.2g} between the per-process "
            f"values, alpha {self.alpha:g}); rerun with more --repeats, on a quieter machine"
        )
        note = "; ".join(filter(None, (row.note, note)))
        return replace(row, verdict=gate.INCONCLUSIVE, note=note)

    @property
    def sides(self) -> tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]:
        return self.base_runs, self.head_runs

    @staticmethod
    def _per_process(
        runs: Sequence[Mapping[str, Any]], name: str, metric: Metric
    ) -> list[float] | None:
        entries = [b for doc in runs for b in doc["benchmarks"] if b["name"] == name]
        if len(entries) != len(runs):
            return None
        return baseline._per_process(entries, metric)  # gpt2-bench baseline's own estimate


def judge_across(
    base: Mapping[str, Any],
    head: Mapping[str, Any],
    settings: gate.GateSettings,
    pythons: Mapping[str, str],
    runs: tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]] = ((), ()),
) -> tuple[list[str], gate.GateResult]:
    """(header lines, verdict) of an A/B across environments: raw wall-clock, interleaved, with
    thresholds from the spread of the sides' processes (`runs`: base's, head's).
    Raises files.UnusableInput when the device or the measuring setup differs."""
    check_environment(base, head)  # device and measuring setup; the stack may differ here
    judged_base, calibration_note = calibrated(base, *runs)
    raw = replace(settings, time_basis="raw", stack_change=())
    result = gate.compare(judged_base, head, raw)
    by_process = _ProcessCheck(runs[0], runs[1], settings.alpha)
    result = replace(result, rows=tuple(by_process(_too_spread(r)) for r in result.rows))
    processes = len(runs[0]) or int(base.get("pooled_from") or 1)
    lines = [*header(pythons, base, head, processes), calibration_note]
    # the gate's own note on calibration speaks of one process against n: ours replaces it
    gate_notes = [n for n in result.notes if not n.startswith("baseline calibrated from")]
    notes = (*lines, *twin_notes(base, head, settings), *gate_notes)
    return lines, replace(result, notes=notes)


def without_header(result: gate.GateResult, lines: Sequence[str]) -> gate.GateResult:
    """The verdict for the terminal, whose header was printed above the table."""
    return replace(result, notes=tuple(n for n in result.notes if n not in lines))
