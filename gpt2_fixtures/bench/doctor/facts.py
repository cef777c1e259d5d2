"""Facts for `gpt2-bench doctor`: torch, nvidia-smi, /proc and /sys, read once, never judged here.

The parsers of nvidia-smi's output are pure (tests feed them recorded output); the gatherers
run programs and read files, and report "not available" rather than raise.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gpt2_fixtures.bench import cpuinfo
from gpt2_fixtures.bench.doctor.checks import CpuFacts, GpuFacts, TorchFacts

# nvidia-smi --query-gpu fields, in the order they are parsed
GPU_FIELDS = (
    "uuid",
    "index",
    "driver_version",
    "mig.mode.current",
    "persistence_mode",
    "memory.total",
    "memory.free",
    "pstate",
    "clocks.sm",
    "clocks.max.sm",
    "power.draw",
    "power.limit",
)
# renamed in driver 535: try the new name first
CLOCK_REASON_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")
OPTIONAL_PACKAGES = ("flash_attn", "torchao", "triton")
Runner = Callable[[Sequence[str]], str | None]


def run_program(argv: Sequence[str]) -> str | None:
    """stdout of a program, or None when it is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


# --- nvidia-smi ----------------------------------------------------------------------------------


def parse_csv(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """Rows of `--format=csv,noheader,nounits` output as dicts (values stripped)."""
    rows = []
    for line in text.splitlines():
        if line.strip():
            values = [v.strip() for v in line.split(",")]
            rows.append(dict(zip(fields, values, strict=False)))
    return rows


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def _reported(text: str | None) -> str | None:
    return None if text is None or text.startswith("[") or text == "N/A" else text


def driver_cuda_version(header: str | None) -> str | None:
    """The "CUDA Version: 12.4" in nvidia-smi's output: the newest runtime the driver takes."""
    match = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", header or "")
    return match[1] if match else None


def pick_gpu(rows: Sequence[Mapping[str, str]], uuid: str | None, index: int) -> dict[str, str]:
    """The row of the device torch uses: by UUID when known (CUDA_VISIBLE_DEVICES renumbers)."""
    for row in rows:
        if uuid and row.get("uuid", "").removeprefix("GPU-") == uuid.removeprefix("GPU-"):
            return dict(row)
    return dict(rows[index]) if index < len(rows) else {}


def other_processes(apps_text: str | None, gpu_uuid: str, own_pid: int) -> tuple[str, ...]:
    fields = ("gpu_uuid", "pid", "process_name", "used_memory")
    out = []
    for row in parse_csv(apps_text or "", fields):
        if row.get("gpu_uuid") == gpu_uuid and row.get("pid") != str(own_pid):
            out.append(
                f"pid {row.get('pid')} {row.get('process_name')} {row.get('used_memory')} MiB"
            )
    return tuple(out)


def gpu_facts_from(
    row: Mapping[str, str], header: str | None, reasons: str | None, processes: tuple[str, ...]
) -> GpuFacts:
    reason_bits = None
    if reasons and reasons.strip().lower().startswith("0x"):
        reason_bits = int(reasons.strip(), 16)
    return GpuFacts(
        driver=_reported(row.get("driver_version")),
        driver_cuda=driver_cuda_version(header),
        mig=_reported(row.get("mig.mode.current")),
        persistence=_reported(row.get("persistence_mode")),
        memory_total_mb=_float(row.get("memory.total")),
        memory_free_mb=_float(row.get("memory.free")),
        pstate=_reported(row.get("pstate")),
        sm_clock_mhz=_float(row.get("clocks.sm")),
        sm_clock_max_mhz=_float(row.get("clocks.max.sm")),
        power_draw_w=_float(row.get("power.draw")),
        power_limit_w=_float(row.get("power.limit")),
        clock_reasons=reason_bits,
        processes=processes,
    )


def gpu_facts(uuid: str | None, index: int, run: Runner = run_program) -> GpuFacts | None:
    """nvidia-smi's view of the device; None when nvidia-smi is absent or says nothing."""
    query = ["nvidia-smi", "--format=csv,noheader,nounits"]
    listing = run([*query, "--query-gpu=" + ",".join(GPU_FIELDS)])
    if not listing:
        return None
    row = pick_gpu(parse_csv(listing, GPU_FIELDS), uuid, index)
    if not row:
        return None
    reasons = None
    for name in CLOCK_REASON_FIELDS:
        out = run([*query, f"--query-gpu={name}", f"--id={row['uuid']}"])
        if out and out.strip():
            reasons = out.strip().splitlines()[0]
            break
    apps = run([*query, "--query-compute-apps=gpu_uuid,pid,process_name,used_memory"])
    processes = other_processes(apps, row.get("uuid", ""), os.getpid())
    return gpu_facts_from(row, run(["nvidia-smi"]), reasons, processes)


# --- torch ---------------------------------------------------------------------------------


def import_state(name: str, try_import: bool) -> str | None:
    """None when ``name`` imports; else why not ("not installed" or the import error)."""
    if importlib.util.find_spec(name) is None:
        return "not installed"
    if not try_import:
        return None
    try:
        importlib.import_module(name)
    except Exception as err:  # a wheel built for another torch fails here, with any error
        return f"installed but fails to import ({type(err).__name__}: {str(err)[:120]})"
    return None


def resolve_device(requested: str) -> str:
    """auto -> cuda:0 when torch sees a GPU, else cpu; cuda -> cuda:0."""
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cuda:0" if requested == "cuda" else requested


def torch_facts(device: str) -> TorchFacts:
    import torch

    cuda = device.startswith("cuda") and torch.cuda.is_available()
    index = int(device.split(":")[1]) if ":" in device else 0
    usable = cuda and index < torch.cuda.device_count()
    packages = {name: import_state(name, try_import=usable) for name in OPTIONAL_PACKAGES}
    return TorchFacts(
        version=torch.__version__,
        cuda_build=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        device=device,
        device_name=torch.cuda.get_device_name(index) if usable else cpuinfo.model(),
        capability=tuple(torch.cuda.get_device_capability(index)) if usable else None,  # type: ignore[arg-type]
        bf16=bool(torch.cuda.is_bf16_supported()) if usable else None,
        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32) if usable else None,
        tf32_cudnn=bool(torch.backends.cudnn.allow_tf32) if usable else None,
        threads=torch.get_num_threads(),
        packages=packages,
    )


def device_uuid(device: str) -> str | None:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    try:
        return str(torch.cuda.get_device_properties(index).uuid)
    except (AttributeError, RuntimeError, AssertionError):
        return None


def optimization_reasons(device: str, optimization_ids: Sequence[str]) -> dict[str, str | None]:
    """The suite's own skip decision for each optimization on this device (None: it runs)."""
    from gpt2_fixtures.bench import optimizations
    from gpt2_fixtures.config import parse_optimization

    reasons: dict[str, str | None] = {}
    for optimization_id in optimization_ids:
        optimization = parse_optimization(optimization_id)
        phase = "infer" if optimization.int8 else "train"
        reason = optimizations.skip_reason(optimization, device, phase)
        reasons[optimization.id] = (
            None if reason is None else reason.removeprefix(f"{optimization.id}: ")
        )
    return reasons


def default_optimizations(device: str) -> list[str]:
    """The device's default grid, plus the compile optimization on CPU (it is opt-in there)."""
    from gpt2_fixtures.bench.settings import DEFAULTS

    ids = str(DEFAULTS["cuda" if device.startswith("cuda") else "cpu"]["optimizations"]).split(",")
    return ids if device.startswith("cuda") else [*ids, "sdpa-compile"]


# --- the CPU and the process's environment -------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def governors(root: str = "/sys/devices/system/cpu") -> tuple[str, ...]:
    files = sorted(Path(root).glob("cpu[0-9]*/cpufreq/scaling_governor"))
    return tuple(g for g in (_read(str(f)).strip() for f in files) if g)


REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib"


def reported_free_kib(path: str = REPORTED_KIB) -> int | None:
    """KiB of free memory the kernel has reported to its hypervisor (Linux mm/page_reporting.c,
    exposed by kernels that carry the counter); None when absent or unreadable."""
    text = _read(path).strip()
    return int(text) if text.isdigit() else None


def cpu_facts(env: Mapping[str, str] = os.environ) -> CpuFacts:
    try:
        load: float | None = os.getloadavg()[0]
    except OSError:
        load = None
    malloc_env = tuple(f"{k}={v}" for k, v in sorted(env.items()) if k.startswith("MALLOC_"))
    return CpuFacts(
        cores=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
        load_1min=load,
        governors=governors(),
        omp_threads=env.get("OMP_NUM_THREADS"),
        ld_preload=env.get("LD_PRELOAD"),
        malloc_env=malloc_env,
        cuda_alloc_conf=env.get("PYTORCH_CUDA_ALLOC_CONF") or env.get("PYTORCH_ALLOC_CONF"),
        reported_free_kib=reported_free_kib(),
    )


def cpp_compiler(env: Mapping[str, str] = os.environ) -> str | None:
    for name in (env.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def python_headers() -> bool:
    return (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()
