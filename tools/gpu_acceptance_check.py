"""The invariants of tools/gpu_acceptance.sh, judged from the files its steps wrote.

    python tools/gpu_acceptance_check.py --device cuda|cpu --dir DIR

DIR holds steps.tsv (step, exit status, seconds), doctor.json, grid.json, oom.json and
distributed.json. Prints one Markdown table (check, PASS/FAIL/n/a, detail), writes it to
DIR/acceptance.md and DIR/acceptance.json, and exits 1 when a check fails. Pure JSON: no torch.
What a GPU must show (docs/ci.md, "GPU acceptance run"): SDPA bf16 faster than eager bf16 at
B8xT512 training, a fused attention kernel behind SDPA, MFU where the peak is known, CUDA memory
keys, the twin control timed before every round, a real out-of-memory case recorded with the next
case still run, and a 1-GPU torchrun job on NCCL.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpt2_fixtures.config import PHASES
from gpt2_fixtures.results import files

PASS, FAIL, NA = "PASS", "FAIL", "n/a"
FUSED_KERNELS = ("flash", "efficient", "cudnn")  # not "math": SDPA's unfused fallback
OOM_BATCH = "-b144-"  # tools/gpu_acceptance.sh's batch that cannot fit
Row = tuple[str, str, str]


def load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def benches(doc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return list((doc or {}).get("benchmarks") or [])


def _info(b: Mapping[str, Any]) -> dict[str, Any]:
    return dict(b.get("extra_info") or {})


def step_status(steps: Mapping[str, int], name: str, ok: Sequence[int] = (0,)) -> Row:
    if name not in steps:
        return (f"step {name}", FAIL, "did not run")
    rc = steps[name]
    return (f"step {name}", PASS if rc in ok else FAIL, f"exit {rc}")


def phases_present(grid: Sequence[Mapping[str, Any]]) -> Row:
    seen = {_info(b).get("phase") for b in grid}
    missing = [p for p in PHASES if p not in seen]
    optimizations = sorted({str(_info(b).get("optimization")) for b in grid})
    detail = f"{len(grid)} cases; optimizations {', '.join(optimizations) or 'none'}"
    return (
        "grid: every phase ran",
        FAIL if missing else PASS,
        detail + (f"; missing {missing}" if missing else ""),
    )


def _median_ms(grid: Sequence[Mapping[str, Any]], name: str) -> float | None:
    for b in grid:
        if b.get("name") == name:
            return float(b["stats"]["median"]) * 1000
    return None


def sdpa_beats_eager(grid: Sequence[Mapping[str, Any]], device: str) -> Row:
    name = "SDPA bf16 faster than eager bf16 (train B8xT512)"
    if not device.startswith("cuda"):
        return (name, NA, "CPU: not a GPU invariant")
    sdpa = _median_ms(grid, "test_train[sdpa-bf16-b8-s512]")
    eager = _median_ms(grid, "test_train[eager-bf16-b8-s512]")
    if sdpa is None or eager is None:
        return (name, FAIL, f"case missing (sdpa {sdpa}, eager {eager})")
    verdict = PASS if sdpa < eager else FAIL
    return (name, verdict, f"sdpa {sdpa:.1f} ms vs eager {eager:.1f} ms (x{eager / sdpa:.2f})")


def fused_attention(grid: Sequence[Mapping[str, Any]], device: str) -> Row:
    name = "attn_kernel of SDPA half-precision cases is fused"
    cases = [
        b
        for b in grid
        if str(_info(b).get("optimization", "")).startswith("sdpa-")
        and _info(b).get("dtype") in ("bfloat16", "float16")
        and "compile" not in str(_info(b).get("optimization"))
    ]
    kernels = sorted({str(_info(b).get("attn_kernel")) for b in cases})
    if not device.startswith("cuda"):
        seen = sorted({str(_info(b).get("attn_kernel")) for b in grid})
        return (name, NA, f"CPU: kernels seen {', '.join(seen)}")
    if not cases:
        return (name, FAIL, "no sdpa-bf16/fp16 case ran")
    bad = [k for k in kernels if not all(part in FUSED_KERNELS for part in k.split("+"))]
    return (name, FAIL if bad else PASS, f"kernels {', '.join(kernels)}")


def mfu_known(grid: Sequence[Mapping[str, Any]], device: str) -> Row:
    name = "mfu not null (train and infer, not int8)"
    cases = [
        b
        for b in grid
        if _info(b).get("phase") in ("train", "infer") and _info(b).get("dtype") != "int8"
    ]
    nulls = [b["name"] for b in cases if _info(b).get("mfu") is None]
    if not device.startswith("cuda"):
        return (name, NA, f"CPU: no peak table ({len(nulls)} of {len(cases)} null)")
    if not cases:
        return (name, FAIL, "no case")
    return (
        name,
        FAIL if nulls else PASS,
        f"{len(cases) - len(nulls)} of {len(cases)} known"
        + (f"; null: {nulls[:3]}" if nulls else ""),
    )


def memory_keys(grid: Sequence[Mapping[str, Any]], device: str) -> Row:
    keys = (
        ("peak_memory_mb", "peak_reserved_mb") if device.startswith("cuda") else ("peak_memory_mb",)
    )
    name = "memory keys present: " + ", ".join(keys)
    bad = [
        b["name"]
        for b in grid
        if not all(isinstance(_info(b).get(k), int | float) and _info(b)[k] > 0 for k in keys)
    ]
    footprint = sum("footprint_memory_mb" in _info(b) for b in grid)
    detail = f"{len(grid) - len(bad)} of {len(grid)} cases; footprint_memory_mb in {footprint}"
    return (
        name,
        FAIL if bad or not grid else PASS,
        detail + (f"; lacking: {bad[:3]}" if bad else ""),
    )


def twin_control(grid: Sequence[Mapping[str, Any]]) -> Row:
    name = "twin control timed before every round"
    bad = []
    for b in grid:
        info, data = _info(b), (b.get("stats") or {}).get("data") or []
        if not str(info.get("control_kind", "")).startswith("twin") or len(
            info.get("control_round_s") or []
        ) != len(data):
            bad.append(b["name"])
    kinds = sorted({str(_info(b).get("control_kind")) for b in grid})
    return (
        name,
        FAIL if bad or not grid else PASS,
        f"kinds {', '.join(kinds)}" + (f"; not: {bad[:3]}" if bad else ""),
    )


def oom_recorded(doc: Mapping[str, Any] | None, device: str) -> Row:
    name = "real CUDA out-of-memory: recorded, next case ran"
    if not device.startswith("cuda"):
        return (name, NA, "CPU: a batch that cannot fit would meet the OS, not torch")
    if doc is None:
        return (name, FAIL, "no oom.json")
    failed = files.failed_cases(doc)
    oom = [f for f in failed if f.get("kind") == "oom" and OOM_BATCH in str(f.get("name"))]
    ran = [b["name"] for b in benches(doc) if "-b1-" in b["name"]]
    verdict = PASS if oom and ran else FAIL
    peak = oom[0].get("peak_memory_mb") if oom else None
    return (name, verdict, f"oom records {len(oom)} (peak {peak} MB); next case ran: {ran or 'no'}")


def distributed(doc: Mapping[str, Any] | None, device: str) -> Row:
    backend = "nccl" if device.startswith("cuda") else "gloo"
    name = f"1-rank torchrun job on {backend}"
    if doc is None:
        return (name, FAIL, "no distributed.json")
    got = ((doc.get("machine_info") or {}).get("gpt2") or {}).get("dist_backend")
    cases = [b["name"] for b in benches(doc)]
    verdict = PASS if cases and got == backend else FAIL
    return (name, verdict, f"backend {got}; {len(cases)} case(s)")


def read_steps(path: Path) -> dict[str, int]:
    """steps.tsv: step, exit status, seconds (one line per step; -1 for an unreadable status)."""
    steps: dict[str, int] = {}
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    for line in text.splitlines():
        step, rc, _ = [*line.split("\t"), "", ""][:3]
        steps[step] = int(rc) if rc.lstrip("-").isdigit() else -1
    return steps


def judge(directory: Path, device: str) -> list[Row]:
    steps = read_steps(directory / "steps.tsv")
    grid = benches(load(directory / "grid.json"))
    rows = [step_status(steps, "doctor"), step_status(steps, "grid"), phases_present(grid)]
    rows += [sdpa_beats_eager(grid, device), fused_attention(grid, device), mfu_known(grid, device)]
    rows += [memory_keys(grid, device), twin_control(grid)]
    if device.startswith("cuda"):
        rows.append(step_status(steps, "oom", ok=(0, 1)))
    rows.append(oom_recorded(load(directory / "oom.json"), device))
    rows += [
        step_status(steps, "distributed"),
        distributed(load(directory / "distributed.json"), device),
    ]
    return rows


def to_markdown(rows: Sequence[Row], title: str) -> str:
    lines = [f"### {title}", "", "| check | result | detail |", "|---|---|---|"]
    lines += [
        f"| {c} | {'**FAIL**' if r == FAIL else r} | {d.replace('|', '/')} |" for c, r, d in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--title", default="gpt2-bench GPU acceptance")
    args = parser.parse_args(argv)
    rows = judge(args.dir, args.device)
    text = to_markdown(rows, args.title)
    print(text, end="")
    (args.dir / "acceptance.md").write_text(text, encoding="utf-8")
    record = [{"check": c, "result": r, "detail": d} for c, r, d in rows]
    (args.dir / "acceptance.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 1 if any(r == FAIL for _, r, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
