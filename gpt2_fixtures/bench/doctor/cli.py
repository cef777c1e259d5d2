"""`gpt2-bench doctor`: is this machine fit to benchmark on, and can its verdicts be trusted?

One table of checks, each ok, warn or fail with a one-line fix: torch's build and CUDA against
the driver, the device, which optimizations can run and why not, the GPU's and the CPU's state,
and a noise probe of the real step. Exit 0 when nothing fails, 1 when a check fails, 2 on bad
arguments. The rules are in checks.py (pure), the facts in facts.py, the probe in noise.py;
docs/ci.md says how to read the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpt2_fixtures.bench import cpuinfo
from gpt2_fixtures.bench.doctor import checks, facts
from gpt2_fixtures.bench.doctor.checks import Check
from gpt2_fixtures.config import parse_device

PACKAGES = (
    (
        "flash_attn",
        "the flash2 optimizations",
        "pip install flash-attn --no-build-isolation (docs/ci.md)",
    ),
    ("torchao", "int8 on CUDA", "pip install torchao"),
)
MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}
ICON = {"ok": "✅ ok", "warn": "⚠️ warn", "fail": "❌ fail"}


def gather_checks(requested: str) -> tuple[list[Check], dict[str, Any]]:
    """Every check except the probe, and the facts behind them (for --json)."""
    device = facts.resolve_device(requested)
    wants_cuda = device.startswith("cuda")
    t = facts.torch_facts(device)
    index = int(device.split(":")[1]) if ":" in device else 0
    g = (
        facts.gpu_facts(facts.device_uuid(device), index)
        if wants_cuda or requested == "auto"
        else None
    )
    c = facts.cpu_facts()
    usable = not wants_cuda or (t.cuda_available and index < t.device_count)
    rows = [checks.torch_build(t, wants_cuda), checks.cuda_runtime(t, g, wants_cuda)]
    if wants_cuda and not usable:
        found = f"{device}: torch sees {t.device_count} CUDA device(s)"
        rows.append(
            Check("device", "fail", found, "use --device cpu, auto or an index below the count")
        )
    else:
        rows.append(checks.device(t, requested))
        rows += [checks.bf16(t, cpuinfo.flags()), checks.tf32(t), checks.mig(g)]
        rows += [checks.package(name, t, why, fix) for name, why, fix in PACKAGES]
        rows.append(checks.compiler(t, facts.cpp_compiler(), facts.python_headers()))
        rows.append(_optimizations(device))
    if wants_cuda:
        rows += [
            checks.gpu_processes(g),
            checks.gpu_memory(g),
            checks.persistence(g),
            checks.clocks(g),
        ]
    rows += [checks.cpu_load(c), checks.governor(c), checks.threads(t, c), checks.host_memory(c)]
    rows.append(checks.allocator(c, _malloc_mode(), wants_cuda))
    return rows, {"device": device, "torch": _plain(t), "gpu": _plain(g), "cpu": _plain(c)}


def _optimizations(device: str) -> Check:
    """The suite's own skip decisions; a bench module that moved is a warning, not a crash."""
    try:
        reasons = facts.optimization_reasons(device, facts.default_optimizations(device))
    except (ImportError, AttributeError, KeyError, TypeError) as err:
        found = f"could not ask the suite which optimizations run ({type(err).__name__}: {err})"
        return Check("optimizations", "warn", found, "report this: doctor and bench disagree")
    return checks.optimizations(reasons)


def _malloc_mode() -> str:
    """What --gpt2-malloc's default (steady) would set here, without changing this process."""
    try:
        from gpt2_fixtures.bench.memory import glibc
    except ImportError:
        return "unknown"
    return (
        "glibc: the suite holds freed memory in the heap (steady)"
        if glibc()
        else "not glibc: left alone"
    )


def _plain(obj: Any) -> Any:
    return None if obj is None else {k: v for k, v in vars(obj).items()}


# --- rendering ------------------------------------------------------------------------------------


def format_table(rows: Sequence[Check]) -> str:
    """Plain text for a terminal: status, check, what was found, and the fix beneath it."""
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{MARK[r.status]:<4}  {r.name:<{width}}  {r.found}")
        if r.fix:
            lines.append(f"{'':<4}  {'':<{width}}  -> {r.fix}")
    counts = {s: sum(r.status == s for r in rows) for s in MARK}
    lines.append(
        f"gpt2-bench doctor: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"
    )
    return "\n".join(lines)


def to_markdown(rows: Sequence[Check], device: str) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    worst = checks.worst(rows)
    lines = [f"### gpt2-bench doctor ({device}): {ICON[worst]}", "", "| | check | found | fix |"]
    lines.append("|---|---|---|---|")
    lines += [f"| {ICON[r.status]} | {r.name} | {cell(r.found)} | {cell(r.fix)} |" for r in rows]
    return "\n".join(lines) + "\n"


# --- command line ------------------------------------------------------------------------------


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=parse_device,
        default="auto",
        help="auto, cpu, cuda or cuda:N. Default: %(default)r",
    )
    parser.add_argument("--json", help="write the checks and the facts behind them as JSON here")
    parser.add_argument(
        "--markdown", help="append the table as Markdown here, e.g. $GITHUB_STEP_SUMMARY"
    )
    parser.add_argument(
        "--probe-rounds",
        type=int,
        default=8,
        help="rounds per case of the noise probe. Default: %(default)r",
    )
    parser.add_argument("--no-probe", action="store_true", help="skip the noise probe")


def run_doctor(args: argparse.Namespace) -> int:
    """`gpt2-bench doctor`: exit 0 when nothing fails, 1 when a check fails, 2 on bad input."""
    from gpt2_fixtures.bench.doctor import noise as doctor_noise  # the probe's torch, lazily
    from gpt2_fixtures.results.files import atomic_write_text

    if args.probe_rounds < 2:
        print("gpt2-bench doctor: error: --probe-rounds must be at least 2", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows, record = gather_checks(args.device)
    usable = not any(r.name == "device" and r.status == "fail" for r in rows)
    if usable and not args.no_probe:
        bf16 = record["torch"].get("bf16")
        probe, record["probe"] = doctor_noise.run_probe(record["device"], bf16, args.probe_rounds)
        rows.append(probe)
    record["checks"] = [vars(r) for r in rows]
    record["seconds"] = round(time.perf_counter() - start, 1)
    print(format_table(rows))
    try:
        if args.json:
            text = json.dumps(record, indent=2, default=str) + "\n"
            atomic_write_text(Path(args.json), text)
        if args.markdown:
            with open(args.markdown, "a", encoding="utf-8") as summary:
                summary.write(to_markdown(rows, record["device"]) + "\n")
    except OSError as err:
        print(f"gpt2-bench doctor: error: cannot write: {err}", file=sys.stderr)
        return 2
    return 1 if checks.worst(rows) == "fail" else 0
