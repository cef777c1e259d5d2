"""Machine facts: the device's name, library versions and numerics settings of this process.

What the gate does with each group of facts (device, measuring setup, software stack) is in
docs/gate.md, "Comparable or not".
"""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import torch

from gpt2_fixtures.bench import cpuinfo, memory

# Versions of how a number is measured: bump one when a change makes results before and after it
# incomparable (the gate then judges no time row across them). ``measure``: bench/measure.py's
# rounds and settled steps; ``control``: the control workloads of bench/controls.py.
MEASURE_VERSION = "0.5.1"
CONTROL_VERSION = "0.5"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpuinfo.model()


def environment(device: str, tokenizer: str | None = None) -> dict[str, Any]:
    """Versions, device and numerics settings that decide whether two results are comparable;
    ``tokenizer`` (``Settings.tokenizer.source``) is recorded when given."""
    import datasets
    import transformers

    cuda = device.startswith("cuda")
    info: dict[str, Any] = {
        "device": device,
        "device_type": torch.device(device).type,
        "device_name": device_name(device),
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cuda_version": torch.version.cuda,
        "driver_version": _driver_version() if cuda else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "cpu_model": cpuinfo.model(),
        "cpu_threads": torch.get_num_threads(),
        "malloc": memory.malloc_setting(),
        "python": platform.python_version(),
        "cudnn_version": _cudnn_version(),
        "triton": _version_of("triton"),
        "measure_version": MEASURE_VERSION,
        "control_version": CONTROL_VERSION,
        **cpu_identity(),
    }
    if tokenizer is not None:
        info["tokenizer"] = tokenizer
    if cuda:
        info.update(gpu_identity(device))
    return info


def cpu_identity() -> dict[str, Any]:
    """The CPU beyond its brand string: one brand ("AMD EPYC") covers several generations, and
    kernels dispatch on the ISA flags, so vendor, family, model, stepping and a digest of the
    flags tell two generations apart (/proc/cpuinfo; the brand alone elsewhere)."""
    fields = cpuinfo.fields(("vendor_id", "cpu family", "model", "stepping", "flags"))
    flags = " ".join(sorted(fields.get("flags", "").split()))
    return {
        "cpu_vendor": fields.get("vendor_id") or platform.machine(),
        "cpu_family": fields.get("cpu family"),
        "cpu_model_number": fields.get("model"),
        "cpu_stepping": fields.get("stepping"),
        "cpu_flags_sha": hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else None,
    }


def gpu_identity(device: str) -> dict[str, Any]:
    """One GPU name covers several boards: SM count, memory, power limit and clocks differ
    between them (NVML for the last two, when pynvml is installed)."""
    props = torch.cuda.get_device_properties(torch.device(device))
    info: dict[str, Any] = {
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "gpu_memory_mb": round(props.total_memory / 2**20),
    }
    return info | _nvml_limits(torch.device(device).index or 0)


def _nvml_limits(index: int) -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return {
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
            "sm_clock_app_mhz": pynvml.nvmlDeviceGetApplicationsClock(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_app_mhz": pynvml.nvmlDeviceGetApplicationsClock(
                handle, pynvml.NVML_CLOCK_MEM
            ),
        }
    except Exception:  # no NVML: the fields stay absent rather than guessed
        return {}


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version()
    except Exception:  # a build without cuDNN
        return None


def _version_of(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    """The NVIDIA driver version through NVML, when pynvml is installed (CUDA torch wheels)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML: the field stays empty rather than guessed
        return None
