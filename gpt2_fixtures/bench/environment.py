"""Machine facts: the device's name, library versions and numerics settings of this process."""

from __future__ import annotations

import platform
from typing import Any

import torch

from gpt2_fixtures.bench import memory


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


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
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "malloc": memory.malloc_setting(),
        "python": platform.python_version(),
    }
    if tokenizer is not None:
        info["tokenizer"] = tokenizer
    if cuda:
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        info["compute_capability"] = f"{major}.{minor}"
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str | None:
    """The NVIDIA driver version through NVML, when pynvml is installed (CUDA torch wheels)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML: the field stays empty rather than guessed
        return None
