"""The environment fingerprint of a result, and what its differences mean for the gate.

Three groups of facts (docs/gate.md, "Comparable or not"):
- the **device**: another one is refused (exit 2) unless the user allows it;
- the **measuring setup** (threads, allocator, the suite's measuring and control versions):
  results measured differently are refused (exit 2), naming the difference;
- the **software stack under the control** (torch, CUDA, cuDNN, driver, triton, Python): the
  control shares it, so time rows normalised by the control cannot tell the stack from the
  machine; the gate judges them, but never passes them on their own.
Everything else (transformers, datasets) is code under test: a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpt2_fixtures.results.files import UnusableInput

# machine_info["gpt2"] keys that name the hardware. On a CPU, one brand string ("AMD EPYC")
# covers several generations: vendor, family, model, stepping and the ISA flags tell them apart.
CPU_IDENTITY = ("cpu_vendor", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_flags_sha")
# On CUDA one name covers several boards (SXM or PCIe, power limits, clocks).
GPU_IDENTITY = (
    "compute_capability",
    "sm_count",
    "gpu_memory_mb",
    "power_limit_w",
    "sm_clock_app_mhz",
    "mem_clock_app_mhz",
)
DEVICE_KEYS = ("device", "device_name")
SETUP_KEYS = (
    "cpu_threads",
    "malloc",
    "measure_version",
    "control_version",
    "tf32_matmul",
    "float32_matmul_precision",
    # recorded only with --gpt2-round-budget: a budgeted run's long cases time fewer rounds, and
    # a calibrated baseline's thresholds hold for the plan its processes ran
    "round_plan",
)
STACK_KEYS = ("torch", "cuda_version", "cudnn_version", "driver_version", "triton", "python")
NOTE_KEYS = ("transformers", "datasets", "cpu_model", "device_count")
FINGERPRINT_KEYS = (
    *DEVICE_KEYS,
    *CPU_IDENTITY,
    *GPU_IDENTITY,
    *SETUP_KEYS,
    *STACK_KEYS,
    *NOTE_KEYS,
    "bf16_supported",
)
ALLOW_HINT = "pass --allow-device-mismatch (pytest: --gpt2-allow-device-mismatch) to compare anyway"


def gpt2_info(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``machine_info.gpt2`` of a result, or None when the result does not record it."""
    info = doc.get("machine_info")
    gpt2 = info.get("gpt2") if isinstance(info, dict) else None
    return gpt2 if isinstance(gpt2, dict) else None


def fingerprint(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The environment facts that decide whether two results can be compared."""
    info: Mapping[str, Any] = doc.get("machine_info") or {}
    gpt2 = gpt2_info(doc) or {}
    fp: dict[str, Any] = {k: gpt2.get(k) for k in FINGERPRINT_KEYS}
    cpu: Mapping[str, Any] = info["cpu"] if isinstance(info.get("cpu"), dict) else {}
    fp["cpu_model"] = fp["cpu_model"] or cpu.get("brand_raw") or info.get("processor") or None
    fp["python"] = fp["python"] or info.get("python_version")
    fp["has_gpt2_info"] = bool(gpt2)
    return fp


def device_label(fp: Mapping[str, Any]) -> str:
    name = fp.get("device_name") or fp.get("cpu_model") or "unknown device"
    return f"{fp.get('device') or '?'} {name}"


def _identity_keys(fp: Mapping[str, Any]) -> tuple[str, ...]:
    on_gpu = str(fp.get("device") or "").startswith("cuda")
    return (*DEVICE_KEYS, *(GPU_IDENTITY if on_gpu else CPU_IDENTITY))


def _differences(b: Mapping[str, Any], c: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    """``key baseline -> current`` for each key that differs; a key that only one side records
    differs too (its value there is unknown), one that neither records does not."""
    return [f"{k} {b.get(k)} -> {c.get(k)}" for k in keys if b.get(k) != c.get(k)]


@dataclass(frozen=True)
class EnvCheck:
    """What the environments allow: notes for the reader, and the stack's differences."""

    notes: tuple[str, ...]
    stack: tuple[str, ...] = ()  # e.g. ("torch 2.13.0 -> 2.14.0",)
    device_mismatch: bool = False


def check_environment(
    baseline: Mapping[str, Any], current: Mapping[str, Any], allow_device_mismatch: bool = False
) -> EnvCheck:
    """Raise UnusableInput when the device or the measuring setup differs (or a side records
    no fingerprint); otherwise the notes and the stack's differences."""
    b, c = fingerprint(baseline), fingerprint(current)
    device = _device_differences(b, c)
    if device and not allow_device_mismatch:
        raise UnusableInput(f"{device}; {ALLOW_HINT}")
    # without a fingerprint on a side (allowed just above) the setup cannot be checked either
    known = b["has_gpt2_info"] and c["has_gpt2_info"]
    setup = _differences(b, c, SETUP_KEYS) if known else []
    if setup:
        raise UnusableInput(
            f"measuring setup differs ({', '.join(setup)}): results measured differently do not "
            "compare; rerun with the baseline's options or record a new baseline"
        )
    notes = [f"{device}: compared anyway as asked"] if device else []
    stack = _differences(b, c, STACK_KEYS)
    if stack:
        notes.append(
            f"software stack differs ({', '.join(stack)}): the control shares it, so no time row "
            "passes on the ratio alone; judge the upgrade with gpt2-bench ab --base-python"
        )
    notes += [f"{k} differs: baseline {b[k]}, current {c[k]}" for k in NOTE_KEYS if _apart(b, c, k)]
    return EnvCheck(tuple(notes), tuple(stack), bool(device))


def _apart(b: Mapping[str, Any], c: Mapping[str, Any], key: str) -> bool:
    return b[key] is not None and c[key] is not None and b[key] != c[key]


def _device_differences(b: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    """Why the two sides are not the same device, or ''."""
    unrecorded = [
        side for side, fp in (("baseline", b), ("current run", c)) if not fp["has_gpt2_info"]
    ]
    if unrecorded:
        return (
            f"no gpt2 machine info in the {' and '.join(unrecorded)}: the device cannot be checked"
        )
    diffs = _differences(b, c, tuple(dict.fromkeys((*_identity_keys(b), *_identity_keys(c)))))
    if not diffs:
        return ""
    return (
        f"device differs: baseline on {device_label(b)}, current run on {device_label(c)} "
        f"({', '.join(diffs)})"
    )
