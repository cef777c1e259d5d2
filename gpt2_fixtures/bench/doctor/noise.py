"""The noise probe of `gpt2-bench doctor`: how steady is this machine, and what can the gate see?

It runs the real benchmarks in a child process (``python -m pytest benchmarks ... -k CASES
--benchmark-json FILE``) and reads the JSON, the suite's stable interface, so the probe times
exactly what the grid times: a small and a large case, a few short rounds each. From each case's
per-round times it reports the within-process coefficient of variation (of time/control where
the control was timed, as the gate judges) and the smallest slowdown the gate could detect with
the default rounds. The arithmetic (docs/ci.md, "Reading the noise probe"):

    effect/sigma = (z(1 - alpha/benchmarks) + z(power)) * sqrt(2 / rounds) * sqrt(pi / 3)

a one-sided two-sample shift at 80% power, with the Mann-Whitney U test's efficiency of 3/pi
against the t-test on normal data; the gate then needs the effect beyond its threshold as well.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_fixtures.bench.doctor.checks import FAIL, OK, WARN, Check
from gpt2_fixtures.results.gate.samples import control_ratios

POWER = 0.80
GRID_BENCHMARKS = 25  # judged benchmarks of the default CPU grid: the gate splits alpha over them
PROBE_ROUNDS = 8
PROBE_TIMEOUT_S = 150
ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ProbeCase:
    name: str
    rounds: int
    median_ms: float
    cv: float  # of time/control when the control was timed, else of time
    basis: str  # "time/control" or "time"


def cases_for(device: str, bf16: bool | None) -> tuple[dict[str, str], list[str]]:
    """Grid options and the two case names (small inference, large training) for ``device``."""
    if device.startswith("cuda"):
        optimization = "sdpa-bf16" if bf16 else "sdpa-fp16"
        grid = {
            "model": "gpt2",
            "optimizations": optimization,
            "batch-sizes": "1,8",
            "seq-lens": "128,512",
        }
        return grid, [f"test_infer[{optimization}-b1-s128]", f"test_train[{optimization}-b8-s512]"]
    # about 14 ms and 210 ms a round on a quiet 2-core machine (baselines/cpu-tiny.json)
    grid = {"model": "tiny", "optimizations": "sdpa-fp32", "batch-sizes": "1", "seq-lens": "64,256"}
    return grid, ["test_infer[sdpa-fp32-b1-s64]", "test_train[sdpa-fp32-b1-s256]"]


def probe_command(
    device: str, grid: Mapping[str, str], names: Sequence[str], rounds: int, out: Path
) -> list[str]:
    command = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-p", "no:cacheprovider"]
    command += ["-q", "-k", " or ".join(names), "--gpt2-device", device]
    for option, value in grid.items():
        command += [f"--gpt2-{option}", value]
    return [*command, "--gpt2-rounds", str(rounds), "--benchmark-json", str(out)]


def case_noise(bench: Mapping[str, Any]) -> ProbeCase | None:
    """Median and CV of one benchmark of a result file; None without two finite rounds."""
    data = [float(x) for x in (bench.get("stats") or {}).get("data") or [] if _finite(x)]
    if len(data) < 2:
        return None
    # what the gate judges: each round over the controls around it (samples.control_rounds)
    ratios = control_ratios(bench) if all(_finite(c) and c > 0 for c in _controls(bench)) else None
    basis, values = "time", data
    if ratios is not None and len(ratios) == len(data):
        basis, values = "time/control", ratios
    mean = statistics.fmean(values)
    cv = statistics.stdev(values) / mean if mean > 0 else math.inf
    name = str(bench.get("name", "?"))
    return ProbeCase(name, len(data), statistics.median(data) * 1000, cv, basis)


def _controls(bench: Mapping[str, Any]) -> list[Any]:
    info = bench.get("extra_info") or {}
    return [*(info.get("control_round_s") or []), *(info.get("control_after_round_s") or [])]


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def detectable(cv: float, rounds: int, alpha: float, benchmarks: int = GRID_BENCHMARKS) -> float:
    """The smallest slowdown (fraction) the rounds test finds at 80% power, statistics alone."""
    z = statistics.NormalDist()
    k = z.inv_cdf(1 - alpha / max(1, benchmarks)) + z.inv_cdf(POWER)
    return k * math.sqrt(2 / rounds) * math.sqrt(math.pi / 3) * cv


def rounds_needed(
    cv: float, threshold: float, alpha: float, benchmarks: int = GRID_BENCHMARKS
) -> int:
    """Rounds per side at which a slowdown of ``threshold`` becomes detectable."""
    z = statistics.NormalDist()
    k = z.inv_cdf(1 - alpha / max(1, benchmarks)) + z.inv_cdf(POWER)
    return max(2, math.ceil(2 * (k * math.sqrt(math.pi / 3) * cv / threshold) ** 2))


def judge(cases: Sequence[ProbeCase], default_rounds: int, threshold: float, alpha: float) -> Check:
    """The noisiest case decides; warn when the default rounds cannot see the threshold."""
    if not cases:
        return Check(
            "noise probe",
            FAIL,
            "no case produced rounds",
            "run the probe's command by hand (see --json)",
        )
    parts = [f"{c.name}: {c.median_ms:.3g} ms, CV {c.cv:.1%} of {c.basis}" for c in cases]
    noisiest = max(cases, key=lambda c: c.cv)
    statistical = detectable(noisiest.cv, default_rounds, alpha)
    smallest = max(threshold, statistical)
    found = "; ".join(parts) + (
        f"; with {default_rounds} rounds the gate can detect a slowdown of {smallest:.0%}"
        f" (threshold {threshold:.0%}, statistics alone {statistical:.1%})"
    )
    if statistical > threshold:
        need = rounds_needed(noisiest.cv, threshold, alpha)
        fix = (
            f"too noisy for a {threshold:.0%} threshold: --gpt2-rounds {need}, or a quieter machine"
        )
        return Check("noise probe", WARN, found, fix)
    return Check("noise probe", OK, found)


def run_probe(
    device: str, bf16: bool | None, rounds: int = PROBE_ROUNDS
) -> tuple[Check, dict[str, Any]]:
    """Run the probe in a child process; the check and what to put in --json."""
    grid, names = cases_for(device, bf16)
    with tempfile.TemporaryDirectory(prefix="gpt2-doctor-") as tmp:
        out = Path(tmp) / "probe.json"
        command = probe_command(device, grid, names, rounds, out)
        record: dict[str, Any] = {"command": command, "cases": []}
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        try:
            proc = subprocess.run(
                command,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            fix = "the machine is very slow or busy: rerun with --no-probe and check the load"
            return Check("noise probe", WARN, f"did not finish in {PROBE_TIMEOUT_S} s", fix), record
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            fix = "the real step fails here: run the command in --json and read its output"
            return Check(
                "noise probe", FAIL, f"exit {proc.returncode}: {tail[0][:200]}", fix
            ), record
        document = json.loads(out.read_text(encoding="utf-8"))
    cases = [c for c in map(case_noise, document.get("benchmarks") or []) if c is not None]
    record["cases"] = [c.__dict__ for c in cases]
    return judge(cases, *_gate_defaults(device)), record


def _gate_defaults(device: str) -> tuple[int, float, float]:
    """(default rounds, time threshold, alpha) as the suite and the gate use them."""
    rounds, threshold, alpha = 20, 0.10, 0.01  # the 0.2 defaults, if the modules moved
    try:
        from gpt2_fixtures.bench.settings import DEFAULTS
        from gpt2_fixtures.results.gate import GateSettings

        settings = GateSettings()
        rounds = int(DEFAULTS["cuda" if device.startswith("cuda") else "cpu"]["rounds"])  # type: ignore[call-overload]
        threshold, alpha = settings.thresholds.base["time"].rel, settings.alpha
    except (ImportError, AttributeError, KeyError, TypeError):
        pass
    return rounds, threshold, alpha


__all__ = ["FAIL", "OK", "WARN", "case_noise", "detectable", "judge", "run_probe"]
