"""The checks of `gpt2-bench doctor`, as pure functions of facts gathered elsewhere.

Each check takes plain facts (facts.py gathers them from torch, nvidia-smi, /proc and /sys)
and returns one ``Check``: ok, warn or fail, what was found, and a one-line fix. Nothing here
imports torch or runs a program, so every rule is tested with faked facts (tests/test_doctor.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "warn", "fail"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"

# torch's CPU wheels come from this index; the PyPI wheel of the same version is the CUDA build
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# NVML's clock event reasons that slow the GPU down (nvmlClocksEventReasons): anything but
# GpuIdle (0x1) and ApplicationsClocksSetting (0x2) means the clocks are held down right now
HARMLESS_CLOCK_REASONS = 0x1 | 0x2
LOAD_PER_CORE_WARN = 0.5  # a 1-minute load above half the usable cores: other work competes


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    name: str
    status: Status
    found: str  # what was found, one line
    fix: str = ""  # one line that says what to do; empty when ok


@dataclass(frozen=True)
class TorchFacts:
    version: str
    cuda_build: str | None  # torch.version.cuda; None for a CPU build
    cuda_available: bool
    device_count: int
    device: str  # the resolved device: "cpu" or "cuda:N"
    device_name: str = ""
    capability: tuple[int, int] | None = None
    bf16: bool | None = None
    tf32_matmul: bool | None = None
    tf32_cudnn: bool | None = None
    threads: int = 1
    packages: Mapping[str, str | None] = field(default_factory=dict)  # name -> import error/None


@dataclass(frozen=True)
class GpuFacts:
    """What nvidia-smi said about the device (None: not reported)."""

    driver: str | None = None
    driver_cuda: str | None = None  # the highest CUDA version the driver supports
    mig: str | None = None
    persistence: str | None = None
    memory_total_mb: float | None = None
    memory_free_mb: float | None = None
    pstate: str | None = None
    sm_clock_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    clock_reasons: int | None = None
    processes: tuple[str, ...] = ()  # "pid name used_MB" of compute processes other than ours


@dataclass(frozen=True)
class CpuFacts:
    cores: int  # usable by this process (sched_getaffinity)
    load_1min: float | None
    governors: tuple[str, ...]  # scaling_governor of each CPU; empty when not exposed
    omp_threads: str | None
    ld_preload: str | None
    malloc_env: tuple[str, ...]  # MALLOC_* variables that change glibc's behaviour
    cuda_alloc_conf: str | None  # PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF
    # KiB of free memory this (virtual) machine has reported to its host so far (Linux
    # page_reporting, virtio-balloon free page reporting); None where the kernel does not report
    reported_free_kib: int | None = None


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in (text or "").split(".")[:2])
    except ValueError:
        return None


# --- torch and the device ----------------------------------------------------------------------


def torch_build(t: TorchFacts, wants_cuda: bool) -> Check:
    build = f"torch {t.version}, " + (f"CUDA {t.cuda_build} build" if t.cuda_build else "CPU build")
    if wants_cuda and not t.cuda_build:
        version = t.version.split("+")[0]
        fix = f"pip install torch=={version} from PyPI (the CUDA build), not from {CPU_INDEX}"
        return Check("torch build", FAIL, build + "; CUDA was asked for", fix)
    return Check("torch build", OK, build)


def cuda_runtime(t: TorchFacts, g: GpuFacts | None, wants_cuda: bool) -> Check:
    """torch's CUDA runtime must not be newer than what the driver supports."""
    if not t.cuda_build:
        return Check("CUDA runtime vs driver", OK, "CPU build of torch: no CUDA runtime")
    if g is None or g.driver_cuda is None:
        status = FAIL if wants_cuda and not t.cuda_available else WARN
        fix = "install the NVIDIA driver (nvidia-smi must run) or use --device cpu"
        return Check(
            "CUDA runtime vs driver", status, f"runtime {t.cuda_build}; no driver seen", fix
        )
    found = f"runtime {t.cuda_build}, driver {g.driver} supports CUDA {g.driver_cuda}"
    runtime, driver = _version_tuple(t.cuda_build), _version_tuple(g.driver_cuda)
    if runtime and driver and runtime[0] > driver[0]:
        fix = f"update the driver for CUDA {t.cuda_build}, or use a torch for CUDA {g.driver_cuda}"
        return Check("CUDA runtime vs driver", FAIL, found, fix)
    if not t.cuda_available:
        fix = "torch cannot use the GPU: check the driver, CUDA_VISIBLE_DEVICES and /dev/nvidia*"
        return Check(
            "CUDA runtime vs driver", FAIL, found + "; torch.cuda.is_available() is False", fix
        )
    if runtime and driver and runtime > driver:
        fix = "works through CUDA minor-version compatibility; a newer driver avoids surprises"
        return Check("CUDA runtime vs driver", WARN, found, fix)
    return Check("CUDA runtime vs driver", OK, found)


def device(t: TorchFacts, requested: str) -> Check:
    if t.device == "cpu":
        found = f"cpu: {t.device_name or 'CPU'}" + (
            " (no CUDA device)" if requested == "auto" else ""
        )
        return Check("device", OK, found)
    cap = f", compute capability {t.capability[0]}.{t.capability[1]}" if t.capability else ""
    return Check("device", OK, f"{t.device}: {t.device_name}{cap}; {t.device_count} visible")


def bf16(t: TorchFacts, cpu_flags: Sequence[str] = ()) -> Check:
    if t.device == "cpu":
        native = {"avx512_bf16", "amx_bf16"} & set(cpu_flags)
        how = "native (" + ", ".join(sorted(native)) + ")" if native else "emulated (slow)"
        return Check("bf16", OK, f"CPU bf16 is {how}; the CPU grid runs fp32 and int8")
    if t.bf16:
        return Check("bf16", OK, "supported: the -bf16 optimizations run")
    fix = "use the -fp16 optimizations on this GPU (bf16 needs compute capability 8.0 or newer)"
    return Check("bf16", WARN, "not supported: -bf16 optimizations are skipped", fix)


def tf32(t: TorchFacts) -> Check:
    if t.device == "cpu":
        return Check("TF32", OK, "not used on CPU")
    found = f"matmul allow_tf32={t.tf32_matmul}, cudnn allow_tf32={t.tf32_cudnn}"
    if t.tf32_matmul:
        fix = "fp32 results then time TF32 kernels: a baseline made with TF32 off is not comparable"
        return Check("TF32", WARN, found, fix)
    return Check("TF32", OK, found + " (fp32 optimizations time true fp32)")


def mig(g: GpuFacts | None) -> Check:
    if g is None or g.mig in (None, "[N/A]", "N/A"):
        return Check("MIG", OK, "not reported (no MIG on this device)")
    if g.mig.lower().startswith("enabled"):
        fix = "a MIG slice is part of a GPU: baseline on the same slice, or nvidia-smi -mig 0"
        return Check("MIG", WARN, "MIG mode enabled", fix)
    return Check("MIG", OK, f"MIG mode {g.mig.lower()}")


# --- optimizations --------------------------------------------------------------------------------


def package(name: str, t: TorchFacts, why: str, install: str) -> Check:
    """An optional package that some optimizations need: installed and importable here?"""
    state = t.packages.get(name, "not installed")
    if state is None:
        return Check(name, OK, f"importable: {why} can run")
    if t.device == "cpu":
        return Check(name, OK, f"{state}; {why}: CUDA only, skipped on cpu anyway")
    fix = (
        install
        if state == "not installed"
        else f"reinstall {name} for torch {t.version}: {install}"
    )
    return Check(name, WARN, f"{state}: {why} are skipped with their reason", fix)


def compiler(t: TorchFacts, cxx: str | None, python_headers: bool) -> Check:
    """torch.compile needs triton on CUDA, a C++ compiler and Python's headers on CPU."""
    if t.device != "cpu":
        if t.packages.get("triton", "not installed") is None:
            return Check("torch.compile", OK, "triton importable: -compile optimizations can run")
        fix = "triton ships with torch's CUDA wheels: reinstall torch from PyPI"
        return Check("torch.compile", WARN, "no triton: -compile optimizations are skipped", fix)
    if cxx and python_headers:
        return Check("torch.compile", OK, f"C++ compiler {cxx} and Python headers found")
    missing = [
        m for m, ok in (("a C++ compiler", cxx), ("Python's headers", python_headers)) if not ok
    ]
    fix = "apt-get install g++ python3-dev (or set CXX)"
    return Check(
        "torch.compile", WARN, f"no {' and no '.join(missing)}: -compile optimizations fail", fix
    )


def optimizations(reasons: Mapping[str, str | None]) -> Check:
    """Which optimizations this machine can run (reason None) and why the others cannot."""
    runnable = [r for r, why in reasons.items() if why is None]
    skipped = {r: why for r, why in reasons.items() if why is not None}
    found = "runnable: " + (", ".join(runnable) or "none")
    if skipped:
        found += "; skipped: " + "; ".join(f"{r} ({why})" for r, why in skipped.items())
    if not runnable:
        return Check(
            "optimizations", FAIL, found, "fix the checks above; no optimization can run here"
        )
    return Check("optimizations", OK, found)


# --- the GPU's state ---------------------------------------------------------------------------


def gpu_processes(g: GpuFacts | None) -> Check:
    if g is None:
        return Check("other GPU processes", OK, "nvidia-smi not available: not checked")
    if g.processes:
        fix = "stop them or use a GPU of its own: they share its time and memory"
        return Check("other GPU processes", WARN, "; ".join(g.processes), fix)
    return Check("other GPU processes", OK, "none")


def gpu_memory(g: GpuFacts | None) -> Check:
    if g is None or g.memory_total_mb is None or g.memory_free_mb is None:
        return Check("GPU free memory", OK, "not reported")
    found = f"{g.memory_free_mb:,.0f} of {g.memory_total_mb:,.0f} MiB free"
    if g.memory_free_mb < 0.9 * g.memory_total_mb:
        fix = "something holds GPU memory: large cases may run out of memory that the baseline had"
        return Check("GPU free memory", WARN, found, fix)
    return Check("GPU free memory", OK, found)


def persistence(g: GpuFacts | None) -> Check:
    if g is None or g.persistence is None:
        return Check("persistence mode", OK, "not reported")
    if g.persistence.lower() == "disabled":
        fix = "sudo nvidia-smi -pm 1 (keeps the driver loaded between jobs: no cold start per run)"
        return Check("persistence mode", WARN, "disabled", fix)
    return Check("persistence mode", OK, g.persistence.lower())


def clocks(g: GpuFacts | None) -> Check:
    if g is None or g.sm_clock_mhz is None:
        return Check("clocks and power", OK, "not reported")
    found = f"SM {g.sm_clock_mhz:.0f}/{g.sm_clock_max_mhz or 0:.0f} MHz, {g.pstate or '?'}"
    if g.power_draw_w is not None and g.power_limit_w:
        found += f", {g.power_draw_w:.0f}/{g.power_limit_w:.0f} W"
    reasons = (g.clock_reasons or 0) & ~HARMLESS_CLOCK_REASONS
    if reasons:
        fix = (
            "throttled (power, thermal, sync boost): cool it, or lock clocks (sudo nvidia-smi -lgc)"
        )
        return Check("clocks and power", WARN, found + f"; throttle reasons 0x{reasons:x}", fix)
    return Check("clocks and power", OK, found)


# --- the CPU -------------------------------------------------------------------------------


def cpu_load(c: CpuFacts) -> Check:
    if c.load_1min is None:
        return Check("CPU load", OK, "not reported")
    found = f"1-min load {c.load_1min:.2f} on {c.cores} usable core(s)"
    if c.load_1min > LOAD_PER_CORE_WARN * c.cores:
        fix = "other work competes for the CPU: times drift; use a quiet machine, --gpt2-threads 1"
        return Check("CPU load", WARN, found, fix)
    return Check("CPU load", OK, found)


def governor(c: CpuFacts) -> Check:
    if not c.governors:
        return Check("CPU governor", OK, "not exposed (virtual machine or container)")
    kinds = sorted(set(c.governors))
    if kinds != ["performance"]:
        fix = "sudo cpupower frequency-set -g performance (steadier clocks between rounds)"
        return Check("CPU governor", WARN, ", ".join(kinds), fix)
    return Check("CPU governor", OK, "performance")


def threads(t: TorchFacts, c: CpuFacts) -> Check:
    found = f"torch uses {t.threads} thread(s) on {c.cores} usable core(s)"
    if c.omp_threads:
        found += f", OMP_NUM_THREADS={c.omp_threads}"
    if t.threads > c.cores:
        fix = f"oversubscribed: pass --gpt2-threads {c.cores} (or fewer) or unset OMP_NUM_THREADS"
        return Check("CPU threads", WARN, found, fix)
    return Check("CPU threads", OK, found)


def allocator(c: CpuFacts, malloc_mode: str, on_cuda: bool) -> Check:
    """A different allocator changes memory and CPU times: say so, so baselines stay comparable."""
    changed = []
    if c.ld_preload and any(a in c.ld_preload for a in ("jemalloc", "tcmalloc", "mimalloc")):
        changed.append(f"LD_PRELOAD={c.ld_preload}")
    changed += list(c.malloc_env)
    if on_cuda and c.cuda_alloc_conf:
        changed.append(f"CUDA allocator conf {c.cuda_alloc_conf}")
    found = f"host malloc: {malloc_mode}"
    if changed:
        fix = "results are comparable only with a baseline made under the same allocator settings"
        return Check("allocator", WARN, found + "; " + ", ".join(changed), fix)
    return Check("allocator", OK, found + ("; CUDA caching allocator defaults" if on_cuda else ""))


def host_memory(c: CpuFacts) -> Check:
    """A guest that reports its free memory to the host (virtio-balloon free page reporting):
    the host discards those pages and backs them again when a process touches them, so each new
    process starts on memory in another state, and identical processes run at other speeds.
    Measured on such a VM (docs/gate.md, "Figures"): int8 inference at 1 x 64 ran 7-14.5 ms in
    fresh processes of the same code."""
    if not c.reported_free_kib:
        return Check("host memory", OK, "no free memory reported to a host")
    found = (
        f"free memory is reported to the host (page_reporting: {c.reported_free_kib / 2**20:.0f} "
        "GiB so far): each process starts on memory the host backs again"
    )
    fix = (
        "identical processes differ here: gate against a baseline calibrated from 5+ processes "
        "and pool the current side too, or use a machine without free page reporting"
    )
    return Check("host memory", WARN, found, fix)


def worst(checks: Sequence[Check]) -> Status:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK
