"""`gpt2-bench doctor`: each check's rule on faked facts, nvidia-smi parsing on faked output, the
noise arithmetic, and one slow run of the real doctor on this CPU (no GPU here: the GPU checks are
tested only through fakes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers import result_entry

from gpt2_fixtures.bench.doctor import checks as doctor_checks
from gpt2_fixtures.bench.doctor import cli as doctor
from gpt2_fixtures.bench.doctor import facts as doctor_facts
from gpt2_fixtures.bench.doctor import noise as doctor_noise
from gpt2_fixtures.bench.doctor.checks import CpuFacts, GpuFacts, TorchFacts

ROOT = Path(__file__).resolve().parents[1]
UUID = "GPU-8d6f0c1e-1111-2222-3333-444455556666"
OTHER = "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd"

# What nvidia-smi prints (format csv,noheader,nounits) on an idle H100 and a busy second GPU
SMI_GPUS = (
    f"{OTHER}, 0, 550.54.15, Disabled, Enabled, 81559, 1024, P0, 1980, 1980, 650.10, 700.00\n"
    f"{UUID}, 1, 550.54.15, Enabled, Disabled, 81559, 80000, P0, 1755, 1980, 120.5, 700.00\n"
)
SMI_HEADER = (
    "+----------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n"
)
SMI_APPS = f"{UUID}, 4242, python, 1200\n{OTHER}, 777, train.py, 80000\n"


def _torch(**overrides: Any) -> TorchFacts:
    facts = TorchFacts(
        version="2.13.0+cu126",
        cuda_build="12.6",
        cuda_available=True,
        device_count=1,
        device="cuda:0",
        device_name="NVIDIA H100 80GB HBM3",
        capability=(9, 0),
        bf16=True,
        tf32_matmul=False,
        tf32_cudnn=True,
        threads=8,
        packages={"flash_attn": None, "torchao": None, "triton": None},
    )
    return replace(facts, **overrides)


def _cpu(**overrides: Any) -> CpuFacts:
    facts = CpuFacts(
        cores=8,
        load_1min=0.3,
        governors=("performance",) * 8,
        omp_threads=None,
        ld_preload=None,
        malloc_env=(),
        cuda_alloc_conf=None,
    )
    return replace(facts, **overrides)


# --- nvidia-smi ---------------------------------------------------------------------------------


def _runner(outputs: dict[str, str | None]) -> doctor_facts.Runner:
    def run(argv: Sequence[str]) -> str | None:
        key = next((k for k in outputs if k in " ".join(argv)), None)
        return outputs[key] if key is not None else None

    return run


def test_gpu_facts_follow_the_uuid_not_the_index() -> None:
    run = _runner(
        {
            "--query-gpu=uuid": SMI_GPUS,
            "clocks_event_reasons": "0x0000000000000004\n",
            "--query-compute-apps": SMI_APPS,
            "nvidia-smi": SMI_HEADER,
        }
    )
    g = doctor_facts.gpu_facts(UUID.removeprefix("GPU-"), 0, run)
    assert g is not None
    assert g.driver == "550.54.15" and g.driver_cuda == "12.4"
    assert g.mig == "Enabled" and g.persistence == "Disabled"
    assert g.memory_free_mb == 80000 and g.sm_clock_mhz == 1755
    assert g.clock_reasons == 0x4
    # only the other process on OUR GPU, never the one on the other GPU
    assert len(g.processes) == 1 and "pid 4242 python 1200 MiB" in g.processes[0]


def test_gpu_facts_fall_back_to_the_old_throttle_field_and_na_values() -> None:
    gpus = f"{UUID}, 0, 470.1, [N/A], [Not Supported], 16160, 16000, P8, 300, 1590, [N/A], [N/A]\n"
    run = _runner(
        {
            "--query-gpu=uuid": gpus,
            "clocks_event_reasons": None,  # an older driver does not know the new name
            "clocks_throttle_reasons": "0x0000000000000001\n",
            "--query-compute-apps": "",
            "nvidia-smi": "no header here",
        }
    )
    g = doctor_facts.gpu_facts(None, 0, run)
    assert g is not None
    assert g.mig is None and g.persistence is None and g.power_draw_w is None
    assert g.driver_cuda is None and g.clock_reasons == 0x1 and g.processes == ()


def test_no_nvidia_smi_means_no_gpu_facts() -> None:
    assert doctor_facts.gpu_facts(None, 0, _runner({})) is None


# --- torch, driver, device ----------------------------------------------------------------------


def test_cpu_build_fails_only_when_cuda_is_asked_for() -> None:
    cpu_build = _torch(version="2.13.0+cpu", cuda_build=None, cuda_available=False, device="cpu")
    assert doctor_checks.torch_build(cpu_build, wants_cuda=False).status == "ok"
    check = doctor_checks.torch_build(cpu_build, wants_cuda=True)
    assert check.status == "fail" and "pip install torch==2.13.0" in check.fix


@pytest.mark.parametrize(
    ("runtime", "driver", "available", "status"),
    [
        ("12.4", "12.4", True, "ok"),
        ("12.6", "12.4", True, "warn"),  # minor-version compatibility
        ("13.0", "12.4", False, "fail"),  # the driver is too old for the runtime
        ("12.4", "12.8", False, "fail"),  # driver fine, torch still cannot use the GPU
    ],
)
def test_cuda_runtime_against_the_driver(
    runtime: str, driver: str, available: bool, status: str
) -> None:
    t = _torch(cuda_build=runtime, cuda_available=available)
    g = GpuFacts(driver="550", driver_cuda=driver)
    assert doctor_checks.cuda_runtime(t, g, wants_cuda=True).status == status


def test_no_driver_seen_fails_when_torch_cannot_use_cuda() -> None:
    t = _torch(cuda_available=False)
    assert doctor_checks.cuda_runtime(t, None, wants_cuda=True).status == "fail"
    assert doctor_checks.cuda_runtime(_torch(), None, wants_cuda=True).status == "warn"


def test_device_bf16_tf32_and_mig() -> None:
    assert "compute capability 9.0" in doctor_checks.device(_torch(), "cuda").found
    assert doctor_checks.bf16(_torch(bf16=False)).status == "warn"
    assert doctor_checks.bf16(_torch()).status == "ok"
    assert "native" in doctor_checks.bf16(_torch(device="cpu"), ["avx512_bf16"]).found
    assert "emulated" in doctor_checks.bf16(_torch(device="cpu"), ["avx2"]).found
    assert doctor_checks.tf32(_torch(tf32_matmul=True)).status == "warn"
    assert doctor_checks.tf32(_torch()).status == "ok"
    assert doctor_checks.mig(GpuFacts(mig="Enabled")).status == "warn"
    assert doctor_checks.mig(GpuFacts(mig="Disabled")).status == "ok"
    assert doctor_checks.mig(None).status == "ok"


# --- optimizations --------------------------------------------------------------------------------


def test_packages_warn_on_cuda_only() -> None:
    missing = _torch(packages={"flash_attn": "not installed"})
    check = doctor_checks.package(
        "flash_attn", missing, "the flash2 optimizations", "pip install x"
    )
    assert check.status == "warn" and check.fix == "pip install x"
    broken = _torch(packages={"flash_attn": "installed but fails to import (ImportError: sym)"})
    check = doctor_checks.package("flash_attn", broken, "the flash2 optimizations", "pip install x")
    assert check.status == "warn" and check.fix.startswith("reinstall flash_attn for torch")
    on_cpu = replace(missing, device="cpu")
    assert doctor_checks.package("flash_attn", on_cpu, "x", "y").status == "ok"


def test_compiler_needs_triton_on_cuda_and_gxx_with_headers_on_cpu() -> None:
    assert doctor_checks.compiler(_torch(), None, False).status == "ok"
    no_triton = _torch(packages={"triton": "not installed"})
    assert doctor_checks.compiler(no_triton, "g++", True).status == "warn"
    cpu = _torch(device="cpu")
    assert doctor_checks.compiler(cpu, "g++", True).status == "ok"
    check = doctor_checks.compiler(cpu, None, True)
    assert check.status == "warn" and "C++ compiler" in check.found
    assert "Python's headers" in doctor_checks.compiler(cpu, "g++", False).found


def test_optimizations_list_what_runs_and_why_the_rest_does_not() -> None:
    check = doctor_checks.optimizations({"sdpa-bf16": None, "flash2-bf16": "needs flash-attn"})
    assert check.status == "ok"
    assert "runnable: sdpa-bf16" in check.found and "flash2-bf16 (needs flash-attn)" in check.found
    assert doctor_checks.optimizations({"flash2-bf16": "needs CUDA"}).status == "fail"


def test_a_moved_bench_module_is_a_warning_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def moved(device: str, ids: Sequence[str]) -> dict[str, str | None]:
        raise ImportError("cannot import name 'skip_reason'")

    monkeypatch.setattr(doctor_facts, "optimization_reasons", moved)
    check = doctor._optimizations("cpu")
    assert check.status == "warn" and "skip_reason" in check.found


def test_optimization_reasons_are_the_suites_own_skip_decisions() -> None:
    reasons = doctor_facts.optimization_reasons("cpu", ["sdpa-fp32", "flash2", "int8", "sdpa-bf16"])
    assert reasons["sdpa-fp32"] is None and reasons["sdpa-int8"] is None
    assert "flash_attention_2 needs CUDA" in str(reasons["flash2-bf16"])
    assert "CPU" in str(reasons["sdpa-bf16"])


# --- the GPU's state ----------------------------------------------------------------------------


def test_gpu_state_checks() -> None:
    busy = GpuFacts(processes=("pid 1 python 100 MiB",))
    assert doctor_checks.gpu_processes(busy).status == "warn"
    assert doctor_checks.gpu_processes(GpuFacts()).status == "ok"
    assert (
        doctor_checks.gpu_memory(GpuFacts(memory_total_mb=80e3, memory_free_mb=60e3)).status
        == "warn"
    )
    assert (
        doctor_checks.gpu_memory(GpuFacts(memory_total_mb=80e3, memory_free_mb=79e3)).status == "ok"
    )
    check = doctor_checks.persistence(GpuFacts(persistence="Disabled"))
    assert check.status == "warn" and "nvidia-smi -pm 1" in check.fix
    assert doctor_checks.persistence(GpuFacts(persistence="Enabled")).status == "ok"


@pytest.mark.parametrize(
    ("reasons", "status"), [(0x0, "ok"), (0x1, "ok"), (0x4, "warn"), (0x40, "warn")]
)
def test_clock_reasons_other_than_idle_warn(reasons: int, status: str) -> None:
    g = GpuFacts(sm_clock_mhz=1500, sm_clock_max_mhz=1980, power_draw_w=300, power_limit_w=700)
    check = doctor_checks.clocks(replace(g, clock_reasons=reasons))
    assert check.status == status and "1500/1980 MHz" in check.found


# --- the CPU --------------------------------------------------------------------------------------


def test_cpu_checks() -> None:
    assert doctor_checks.cpu_load(_cpu(load_1min=6.0)).status == "warn"
    assert doctor_checks.cpu_load(_cpu()).status == "ok"
    assert doctor_checks.governor(_cpu(governors=("powersave", "performance"))).status == "warn"
    assert doctor_checks.governor(_cpu(governors=())).status == "ok"
    assert doctor_checks.threads(_torch(threads=16), _cpu()).status == "warn"
    assert doctor_checks.threads(_torch(threads=8), _cpu()).status == "ok"
    preload = _cpu(ld_preload="/usr/lib/libjemalloc.so.2")
    assert doctor_checks.allocator(preload, "steady", on_cuda=False).status == "warn"
    assert (
        doctor_checks.allocator(_cpu(malloc_env=("MALLOC_ARENA_MAX=2",)), "x", False).status
        == "warn"
    )
    conf = _cpu(cuda_alloc_conf="expandable_segments:True")
    assert doctor_checks.allocator(conf, "steady", on_cuda=True).status == "warn"
    assert doctor_checks.allocator(conf, "steady", on_cuda=False).status == "ok"


def test_cpu_facts_read_the_environment() -> None:
    env = {"OMP_NUM_THREADS": "4", "MALLOC_ARENA_MAX": "2", "PYTORCH_ALLOC_CONF": "x"}
    c = doctor_facts.cpu_facts(env)
    assert c.omp_threads == "4" and c.malloc_env == ("MALLOC_ARENA_MAX=2",)
    assert c.cuda_alloc_conf == "x" and c.cores >= 1


def test_governors_are_read_from_sysfs(tmp_path: Path) -> None:
    for i, gov in enumerate(("performance", "schedutil")):
        d = tmp_path / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
    assert doctor_facts.governors(str(tmp_path)) == ("performance", "schedutil")


# --- the noise probe --------------------------------------------------------------------------


def _bench(data: list[float], control: list[float] | None = None) -> dict[str, Any]:
    extra = {"control_round_s": control} if control is not None else {}
    return result_entry(data=data, **extra)


def test_case_noise_uses_the_control_ratio_when_timed() -> None:
    steady_ratio = _bench([1.0, 2.0, 1.0, 2.0], [1.0, 2.0, 1.0, 2.0])
    case = doctor_noise.case_noise(steady_ratio)
    assert case is not None and case.basis == "time/control" and case.cv == 0
    raw = doctor_noise.case_noise(_bench([1.0, 2.0, 1.0, 2.0]))
    assert raw is not None and raw.basis == "time" and raw.cv > 0.3
    assert doctor_noise.case_noise(_bench([1.0])) is None


def test_detectable_slowdown_shrinks_with_rounds_and_grows_with_noise() -> None:
    small = doctor_noise.detectable(0.05, 20, 0.01)
    assert doctor_noise.detectable(0.05, 80, 0.01) < small < doctor_noise.detectable(0.10, 20, 0.01)
    need = doctor_noise.rounds_needed(0.05, small, 0.01)
    assert abs(doctor_noise.detectable(0.05, need, 0.01) - small) < 0.01 * small + 1e-9


def test_probe_warns_when_the_default_rounds_cannot_see_the_threshold() -> None:
    quiet = doctor_noise.ProbeCase("a", 8, 10.0, 0.01, "time/control")
    noisy = doctor_noise.ProbeCase("b", 8, 200.0, 0.30, "time/control")
    ok = doctor_noise.judge([quiet], 20, 0.10, 0.01)
    assert ok.status == "ok" and "slowdown of 10%" in ok.found
    warn = doctor_noise.judge([quiet, noisy], 20, 0.10, 0.01)
    assert warn.status == "warn" and "--gpt2-rounds" in warn.fix
    assert doctor_noise.judge([], 20, 0.10, 0.01).status == "fail"


def test_probe_runs_the_real_benchmarks_by_their_ids() -> None:
    grid, names = doctor_noise.cases_for("cpu", None)
    command = doctor_noise.probe_command("cpu", grid, names, 4, Path("out.json"))
    assert command[1:4] == ["-m", "pytest", str(ROOT / "benchmarks")]
    assert command[command.index("-k") + 1] == " or ".join(names)
    assert "--benchmark-json" in command and "--gpt2-rounds" in command
    cuda_grid, cuda_names = doctor_noise.cases_for("cuda:0", True)
    assert cuda_grid["model"] == "gpt2" and "b8-s512" in cuda_names[1]


# --- rendering and the command --------------------------------------------------------------


def test_table_and_markdown_show_every_check_and_its_fix() -> None:
    rows = [
        doctor_checks.Check("a", "ok", "fine"),
        doctor_checks.Check("b", "warn", "x | y", "do z"),
    ]
    table = doctor.format_table(rows)
    assert "WARN  b" in table and "-> do z" in table and table.endswith("1 ok, 1 warn, 0 fail")
    md = doctor.to_markdown(rows, "cpu")
    assert "⚠️ warn" in md.splitlines()[0] and "x \\| y" in md


def test_bad_device_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        doctor_main(["doctor", "--device", "gpu"])
    assert exc.value.code == 2


def doctor_main(argv: list[str]) -> int:
    from gpt2_fixtures.cli import main

    return main(argv)


def test_cuda_asked_on_a_machine_without_it_fails(tmp_path: Path) -> None:
    out = tmp_path / "doctor.json"
    code = doctor_main(["doctor", "--device", "cuda:3", "--no-probe", "--json", str(out)])
    record = json.loads(out.read_text(encoding="utf-8"))
    statuses = {c["name"]: c["status"] for c in record["checks"]}
    assert code == 1 and statuses["device"] == "fail"


DOCTOR = [sys.executable, "-m", "gpt2_fixtures.cli", "doctor", "--device", "cpu"]


def test_real_doctor_on_this_cpu(tmp_path: Path) -> None:
    out, md = tmp_path / "doctor.json", tmp_path / "summary.md"
    proc = subprocess.run(
        [*DOCTOR, "--json", str(out), "--markdown", str(md), "--probe-rounds", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(out.read_text(encoding="utf-8"))
    names = [c["name"] for c in record["checks"]]
    assert names[-1] == "noise probe" and "optimizations" in names and "allocator" in names
    probe = record["checks"][-1]
    # a busy machine may time the probe out (warn); otherwise both cases report a CV
    if "did not finish" not in probe["found"]:
        assert len(record["probe"]["cases"]) == 2, probe
        assert "CV" in probe["found"]
    assert md.read_text(encoding="utf-8").startswith("### gpt2-bench doctor (cpu)")


def test_a_guest_that_reports_free_memory_to_its_host_is_warned(tmp_path: Path) -> None:
    """virtio-balloon free page reporting: every process starts on memory the host backs
    again, and identical processes run at other speeds."""
    counter = tmp_path / "reported_kib"
    counter.write_text("101866396\n")
    assert doctor_facts.reported_free_kib(str(counter)) == 101866396
    assert doctor_facts.reported_free_kib(str(tmp_path / "absent")) is None
    warned = doctor_checks.host_memory(_cpu(reported_free_kib=101866396))
    assert warned.status == doctor_checks.WARN and "97 GiB so far" in warned.found
    assert "calibrated from 5+ processes" in warned.fix
    assert doctor_checks.host_memory(_cpu()).status == doctor_checks.OK
    assert doctor_checks.host_memory(_cpu(reported_free_kib=0)).status == doctor_checks.OK
