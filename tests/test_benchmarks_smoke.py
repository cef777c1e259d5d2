"""Smoke runs of the real `benchmarks/` on the tiny preset, and pytest-benchmark's own compare."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import documented_keys

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--gpt2-model",
    "tiny",
    "--gpt2-device",
    "cpu",
    "--gpt2-rounds",
    "2",
    "--gpt2-warmup",
    "1",
    "--gpt2-batch-sizes",
    "1,2",
    "--gpt2-seq-lens",
    "16,32",
    "-p",
    "no:cacheprovider",
]


def pytest_run(*args, cwd=ROOT):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_train_and_inference_write_results(tmp_path):
    out = tmp_path / "out.json"
    proc = pytest_run(*TINY, "-m", "train or inference", f"--benchmark-json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benches = json.loads(out.read_text())["benchmarks"]
    seen = {
        (
            b["extra_info"]["phase"],
            b["extra_info"]["optimization"],
            b["extra_info"]["batch_size"],
            b["extra_info"]["seq_len"],
        )
        for b in benches
    }
    # 2 batch sizes x 2 lengths x (train: eager, sdpa; infer: eager, sdpa, int8)
    assert len(seen) == 20
    assert {p for p, *_ in seen} == {"train", "infer"}
    assert {o for _, o, *_ in seen} == {"eager-fp32", "sdpa-fp32", "sdpa-int8"}
    for b in benches:
        info = b["extra_info"]
        assert (info["loss"] is None) == (info["phase"] == "infer")  # null, not absent
        undocumented = info.keys() - documented_keys()
        assert not undocumented, f"keys missing from the README: {sorted(undocumented)}"
        # no round budget by default: every case times --gpt2-rounds
        assert info["warm_step_s"] > 0 and b["stats"]["rounds"] == 2
        assert info["rounds_why"] == "fixed: 2 rounds (no round budget)"
        faults = info["round_page_faults"]  # counted, information only
        assert len(faults) == 2 and all(isinstance(f, int) and f >= 0 for f in faults)
        # the control before each round, and after it: the next round's, then one more
        before, after = info["control_round_s"], info["control_after_round_s"]
        assert len(before) == len(after) == 2 and after[0] == before[1] and after[1] > 0


def test_autosave_then_compare_fail(tmp_path):
    storage = f"file://{tmp_path / 'storage'}"
    args = [
        *TINY,
        "-m",
        "inference",
        "--gpt2-optimizations",
        "sdpa",
        "--gpt2-batch-sizes",
        "1",
        # More warmup than the other smoke runs: a 2-round median on a loaded machine must not
        # trip even a 1000% threshold because of a cold first call.
        "--gpt2-warmup",
        "3",
        f"--benchmark-storage={storage}",
    ]
    first = pytest_run(*args, "--benchmark-autosave")
    assert first.returncode == 0, first.stdout[-3000:]
    saved = list((tmp_path / "storage").rglob("*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["benchmarks"][0]["extra_info"]["phase"] == "infer"

    second = pytest_run(*args, "--benchmark-compare", "--benchmark-compare-fail=median:1000%")
    assert second.returncode == 0, second.stdout[-3000:]
    output = second.stdout + second.stderr
    assert "Comparing against benchmarks from" in output
    assert "(0001_" in second.stdout  # the autosaved run is in the comparison table


HELD_MB = 192
HOLDS_MEMORY_AFTER_EACH_CASE = f"""
import pytest
import torch

from gpt2_fixtures.bench import steps

HELD = []


@pytest.mark.inference
def test_infer(benchmark, gpt2_case, gpt2_bench):
    model = gpt2_bench.model(gpt2_case)
    batch = gpt2_bench.batch(gpt2_case)
    step, _ = steps.infer_step(model, batch, gpt2_case.optimization, "cpu")
    benchmark.extra_info.update(gpt2_bench.measure(benchmark, gpt2_case, step, model).info)
    # What a case can leave in the process, as glibc keeps pages of a freed model: resident.
    HELD.append(torch.ones({HELD_MB} * 1024 * 1024 // 4))
"""


def test_footprint_does_not_depend_on_the_cases_before(pytester):
    """One grid in two orders, in two processes: each case after the first finds HELD_MB more
    in the process. Its peak then moves by that much; its footprint (peak above what the
    process held before its model was built) moves only by what a first case pays once."""
    from helpers import run

    pytester.makeini("[pytest]\nmarkers =\n    inference: i\n")
    pytester.makepyfile(test_held=HOLDS_MEMORY_AFTER_EACH_CASE)
    results = {}
    for order in ("sdpa-fp32,eager-fp32", "eager-fp32,sdpa-fp32"):
        out = pytester.path / f"{order}.json"
        result = run(
            pytester, "--gpt2-device", "cpu", "--gpt2-optimizations", order,
            *("--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "32", "--gpt2-rounds", "2"),
            *("--gpt2-warmup", "0", "--gpt2-threads", "1", f"--benchmark-json={out}"),
        )  # fmt: skip
        assert result.ret == 0, result.stdout.str()[-3000:]
        for b in json.loads(out.read_text())["benchmarks"]:
            results.setdefault(b["extra_info"]["optimization"], []).append(b["extra_info"])
    for optimization, (first, second) in results.items():
        if first["memory_kind"] != "cpu_rss" or first["footprint_memory_mb"] is None:
            pytest.skip("no resettable RSS peak on this system: CPU memory is the process peak")
        peaks = abs(first["peak_memory_mb"] - second["peak_memory_mb"])
        footprints = abs(first["footprint_memory_mb"] - second["footprint_memory_mb"])
        assert peaks > HELD_MB / 2, (optimization, first, second)  # the order shows in the peak
        assert footprints < HELD_MB / 4, (optimization, footprints, peaks)  # not in the footprint


def test_a_checkpoint_saved_without_its_tokenizer_runs(tmp_path):
    """save_pretrained of the tiny preset alone (no tokenizer files): the embedded GPT-2 BPE."""
    from gpt2_fixtures.bench import models
    from gpt2_fixtures.config import Optimization

    spec = models.resolve_model("tiny")
    models.build(spec, Optimization(), models.model_config(spec)).save_pretrained(tmp_path / "m")
    out = tmp_path / "out.json"
    proc = pytest_run(
        *("--gpt2-model", str(tmp_path / "m"), "--gpt2-device", "cpu", "-m", "inference"),
        *("--gpt2-optimizations", "sdpa", "--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "16"),
        *("--gpt2-rounds", "1", "--gpt2-warmup", "0", "-p", "no:cacheprovider"),
        f"--benchmark-json={out}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tokenizer=embedded (GPT-2's BPE" in proc.stdout
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["extra_info"]["tokenizer"] == "embedded"
    assert bench["extra_info"]["weights"] == "pretrained" and bench["extra_info"]["loss"] is None


def test_distillation_runs_with_a_local_pretrained_checkpoint(tiny_checkpoint, tmp_path):
    """The README's `--gpt2-model ./my-gpt2 --gpt2-weights pretrained`, with a directory written
    by save_pretrained: the distillation cases run (their preset pair needs no hub)."""
    out = tmp_path / "kd.json"
    local = ["--gpt2-model", str(tiny_checkpoint), "--gpt2-weights", "pretrained"]
    small = [*TINY[2:], "--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "16"]
    proc = pytest_run(*small, *local, "-m", "distillation", f"--benchmark-json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    entries = json.loads(out.read_text())["benchmarks"]
    assert entries and {e["extra_info"]["student"] for e in entries} == {"tiny"}


@pytest.mark.parametrize(
    ("budget", "rounds", "why"),
    [
        # any warm step is longer than a microsecond: 1 round wanted, the minimum (3) given
        ("0.000001", 3, "rounds, raised to the minimum 3"),
        ("0", 6, "fixed: 6 rounds (no round budget)"),
        ("1000", 6, "rounds, capped at 6"),
    ],
)
def test_the_round_budget_plans_each_case_in_a_real_run(tmp_path, budget, rounds, why):
    out = tmp_path / "out.json"
    proc = pytest_run(
        *TINY, "-m", "inference", "--gpt2-optimizations", "sdpa", "--gpt2-batch-sizes", "1",
        "--gpt2-seq-lens", "16", "--gpt2-rounds", "6", "--gpt2-min-rounds", "3",
        "--gpt2-round-budget", budget, f"--benchmark-json={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    (bench,) = doc["benchmarks"]
    info = bench["extra_info"]
    # the plan is part of the measuring setup: the gate refuses a budgeted run beside a fixed one
    plan = doc["machine_info"]["gpt2"].get("round_plan")
    assert plan == (None if budget == "0" else f"budget {float(budget):g} s, 3-6 rounds")
    assert bench["stats"]["rounds"] == len(bench["stats"]["data"]) == rounds
    assert len(info["control_round_s"]) == rounds and info["rounds_why"].endswith(why)
    assert bench["options"]["rounds"] == rounds  # what ran, not the option's 6
    header = "round_plan='budget" in proc.stdout and "3-6 rounds'" in proc.stdout
    assert header == (budget != "0")  # the header names a budget only when there is one
