#!/usr/bin/env python3
"""Baselines kept per device and stack (docs/ci.md, "Baselines per device"). Standard library only.

  pool-runs.py slug RESULTS.json
      the device of a results file as an artifact-name slug, e.g. nvidia-h100-80gb-hbm3
  pool-runs.py pool --current RESULTS.json --newest K --manifest OUT.json [--notes FILE] RUN...
      of the kept runs RUN... (oldest first), delete those of another device (a replaced GPU, or
      a history kept before baselines were per device), leave those of another stack in the
      history but out of the pool, and print the newest K of the rest, one path a line; the
      manifest says which runs, commits and stack the baseline pools and what was left out and why
  pool-runs.py describe --current RESULTS.json --baseline DIR [--run-id ID --head-sha SHA ...]
      one line `baseline=<JSON>` for $GITHUB_OUTPUT: the baseline's manifest, the main run and
      commit that made it, its device, and whether that is the device of RESULTS.json

Every note goes to stderr and, with --notes, is appended to that file (the job summary).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

MANIFEST = "gpu-baseline-manifest.json"


def _machine(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    info = data.get("machine_info") if isinstance(data, dict) else None
    return info if isinstance(info, dict) else {}


def device(path: Path) -> str:
    """The device name the suite recorded (GPU, or CPU model on CPU); '' when there is none."""
    info = _machine(path)
    gpt2 = info.get("gpt2") if isinstance(info.get("gpt2"), dict) else {}
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    return str(gpt2.get("device_name") or cpu.get("brand_raw") or "")


def stack(path: Path) -> str:
    """torch, CUDA and driver: a change of any of them is judged by an A/B, not by this pool."""
    info = _machine(path)
    gpt2 = info.get("gpt2") if isinstance(info.get("gpt2"), dict) else {}
    keys = ("torch", "cuda_version", "driver_version")
    return ", ".join(f"{key} {gpt2.get(key) or 'none'}" for key in keys)


def slug(name: str) -> str:
    """An artifact-name part: lower case letters, digits and single dashes, at most 60 chars."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("(r)", "").replace("(tm)", ""))
    return text.strip("-")[:60].strip("-") or "unknown-device"


def _commit(path: Path) -> str:
    """The commit a kept run measured: from its file name run-NUMBER-ATTEMPT-SHA12.json."""
    match = re.fullmatch(r"run-\d+-\d+-([0-9a-f]{7,40})\.json", path.name)
    return match[1] if match else ""


def _note(text: str, notes: Path | None) -> None:
    print(text, file=sys.stderr)
    if notes is not None:
        with notes.open("a", encoding="utf-8") as out:
            out.write(f"> {text}\n\n")


def pool(
    current: Path, runs: list[Path], newest: int, notes: Path | None
) -> tuple[list[Path], dict[str, Any]]:
    """Delete other devices' runs, skip other stacks; the newest pool and its manifest."""
    want_device, want_stack = device(current), stack(current)
    same: list[Path] = []
    dropped: list[dict[str, str]] = []
    for run in runs:
        if device(run) != want_device:
            reason = f"device {device(run) or 'unknown'}, not {want_device}"
            run.unlink()  # out of this device's history for good, not only out of this pool
        elif stack(run) != want_stack:
            reason = f"stack {stack(run)}, not {want_stack} (kept in the history)"
        else:
            same.append(run)
            continue
        dropped.append({"run": run.name, "reason": reason})
        _note(f"Baseline: left out {run.name}: {reason}.", notes)
    chosen = same[-newest:] if newest > 0 else []
    pooled = [{"run": run.name, "sha": _commit(run)} for run in chosen]
    manifest = {"device": want_device, "slug": slug(want_device), "stack": want_stack}
    return chosen, {**manifest, "pooled": pooled, "dropped": dropped}


def describe(current: Path, baseline_dir: Path, made_by: dict[str, str]) -> dict[str, Any]:
    """What the gate compares with: the baseline's manifest (if any), device, and match."""
    files = [baseline_dir / "gpu-baseline.json", baseline_dir / "gpu-results.json"]
    base = next((f for f in files if f.is_file()), None)
    manifest: dict[str, Any] = {}
    if (baseline_dir / MANIFEST).is_file():
        loaded = json.loads((baseline_dir / MANIFEST).read_text(encoding="utf-8"))
        manifest = loaded if isinstance(loaded, dict) else {}
    base_device = device(base) if base else ""
    return {
        **manifest,
        **made_by,
        "device": base_device,
        "stack": stack(base) if base else "",
        "device_match": bool(base) and base_device == device(current),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pool-runs.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("slug").add_argument("results", type=Path)
    p = sub.add_parser("pool")
    p.add_argument("--current", type=Path, required=True)
    p.add_argument("--newest", type=int, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--notes", type=Path)
    p.add_argument("runs", type=Path, nargs="*")
    d = sub.add_parser("describe")
    d.add_argument("--current", type=Path, required=True)
    d.add_argument("--baseline", type=Path, required=True)
    for key in ("run-id", "head-sha", "created-at"):
        d.add_argument(f"--{key}", default="")
    args = parser.parse_args(argv)
    if args.command == "slug":
        print(slug(device(args.results)))
    elif args.command == "pool":
        chosen, manifest = pool(args.current, args.runs, args.newest, args.notes)
        args.manifest.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        print("\n".join(str(run) for run in chosen))
    else:
        made_by = {"run_id": args.run_id, "head_sha": args.head_sha, "created_at": args.created_at}
        described = describe(args.current, args.baseline, made_by)
        print("baseline=" + json.dumps(described, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
