#!/usr/bin/env python3
"""run-status.py OUT.json: what a gpu-benchmarks run did, written whatever happened.

Read by gpu-comment.yml, so a comment never outlives its head: it says gated, not gated and why,
a failed shard, a baseline of another device, cancelled, or refused. Standard library only; every
input comes from the environment (job results and the merge job's outputs):

  PLAN_RESULT, BENCH_RESULT, MERGE_RESULT  needs.<job>.result (success, failure, cancelled, skipped)
  PR, HEAD_SHA, BASE_SHA, RUN_ID, RUN_URL  what was benchmarked, and where
  GATE_STATUS                              the gate's exit status ('' when it did not run)
  BASELINE_FOUND                           true / false ('' when not looked for)
  BASELINE                                 `pool-runs.py describe` JSON, plus the run that made it
  DEVICE                                   this run's device slug
  STACK, STACK_PINS                        plan.sh: changed or same, and which pins changed; a
                                           change is judged by the `stack` job's A/B
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

GATE_EXITS = {
    "0": "pass",
    "1": "regression",
    "3": "not fully judged",
}


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _baseline() -> dict[str, Any] | None:
    try:
        data = json.loads(_env("BASELINE") or "null")
    except ValueError:
        return None
    return data if isinstance(data, dict) and data else None


def stack_changed() -> bool:
    return _env("STACK") == "changed"


def outcome() -> tuple[str, str]:
    """(outcome, reason), first match wins: the earliest thing that went wrong is the story."""
    plan, bench, merge = _env("PLAN_RESULT"), _env("BENCH_RESULT"), _env("MERGE_RESULT")
    gate, found = _env("GATE_STATUS"), _env("BASELINE_FOUND")
    baseline = _baseline() or {}
    if "cancelled" in (plan, bench, merge):
        return "cancelled", "cancelled before the gate ran"
    if plan != "success":
        return "refused", "the request was refused (see the plan job: a moved head, a bad input)"
    if gate in GATE_EXITS:  # the gate ran, so every shard had come back
        gate_name = "stack A/B" if stack_changed() else "gate"
        return "gated", f"{gate_name} exit {gate}: {GATE_EXITS[gate]}"
    if bench != "success":
        if stack_changed():
            return "failed-shard", f"the stack A/B job ended with {bench or 'no result'}"
        return "failed-shard", f"a benchmark shard ended with {bench or 'no result'}"
    if found == "false":
        device = _env("DEVICE") or "this device"
        return "not-gated", f"no baseline of {device} from a main run yet"
    if found == "true" and baseline.get("device_match") is False:
        theirs = baseline.get("device") or "an unknown device"
        return "device-mismatch", f"the baseline was measured on {theirs}"
    if gate:
        return "not-gated", f"the gate could not read its input (exit {gate})"
    if merge != "success":
        return "not-gated", f"the merge job ended with {merge or 'no result'}"
    return "not-gated", "not a pull-request run: nothing to gate"


def status() -> dict[str, Any]:
    what, why = outcome()
    gate = _env("GATE_STATUS")
    return {
        "schema": 1,
        "outcome": what,
        "reason": why,
        "pr": int(_env("PR")) if _env("PR").isdigit() else None,
        "head_sha": _env("HEAD_SHA"),
        "base_sha": _env("BASE_SHA"),
        "run_id": _env("RUN_ID"),
        "run_url": _env("RUN_URL"),
        "device": _env("DEVICE"),
        "gate_exit": int(gate) if gate.isdigit() else None,
        "baseline": _baseline() if _env("BASELINE_FOUND") == "true" else None,
        # "stack": the base commit in its environment against the head in its own (an A/B on one
        # runner), because the pull request changes the stack; "gate" otherwise (the stored
        # baseline, or with GPU_GATE=ab the interleaved A/B, both on one stack)
        "kind": "stack" if stack_changed() else "gate",
        "stack_pins": _env("STACK_PINS") if stack_changed() else "",
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: run-status.py OUT.json", file=sys.stderr)
        return 2
    data = status()
    Path(argv[1]).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"Status: {data['outcome']} ({data['reason']}).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
