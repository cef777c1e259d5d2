"""The failure catalog: each fault explains itself in one line and loses no measured result."""

import json
import os
import re
import socket

import pytest
from helpers import SMALL, run

from gpt2_fixtures.bench import data, hub, models
from gpt2_fixtures.plugin import guards

ONE_CASE = [
    "--gpt2-batch-sizes",
    "1",
    "--gpt2-seq-lens",
    "16",
    "--gpt2-rounds",
    "2",
    "--gpt2-warmup",
    "0",
    "--gpt2-optimizations",
    "sdpa",
]


def test_nan_loss_is_a_failure_with_the_value_not_a_time(bench_dir):
    bench_dir.makeconftest(
        """
import torch
from gpt2_fixtures.bench import steps

_real = steps.train_step

def _nan_train_step(model, batch, optimization, device):
    step, state = _real(model, batch, optimization, device)
    def nan_step():
        step()
        state.last_loss = torch.tensor(float("nan"))
    return nan_step, state

steps.train_step = _nan_train_step
"""
    )
    result = run(bench_dir, *ONE_CASE, "--benchmark-json=out.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_train*", "*loss is nan*"])
    doc = json.loads((bench_dir.path / "out.json").read_text())
    names = [b["name"] for b in doc["benchmarks"]]
    assert names == ["test_infer[sdpa-fp32-b1-s16]"]  # the failed case left no time behind
    (failed,) = doc["gpt2_bench"][
        "failed"
    ]  # ... and is listed with its reason (README, "When something goes wrong")
    assert failed["name"] == "test_train[sdpa-fp32-b1-s16]" and failed["kind"] == "error"
    assert failed["reason"].startswith("AssertionError: loss is nan")


def test_dataset_too_small_names_the_sizes_and_other_cases_run(bench_dir):
    small = bench_dir.path / "small.txt"
    small.write_text("Only a few words here. " * 10)
    result = run(
        bench_dir,
        "--gpt2-dataset",
        str(small),
        "--gpt2-batch-sizes",
        "1,64",
        "--gpt2-seq-lens",
        "16",
        "--gpt2-rounds",
        "1",
        "--gpt2-warmup",
        "0",
        "--gpt2-optimizations",
        "sdpa",
        "-m",
        "inference",
        "--benchmark-json=out.json",
    )
    result.assert_outcomes(passed=1, failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*gives * blocks of 16 tokens*batch size 64 needs 64 blocks*"])
    assert "Traceback" not in result.stdout.str()
    doc = json.loads((bench_dir.path / "out.json").read_text())
    assert [b["name"] for b in doc["benchmarks"]] == ["test_infer[sdpa-fp32-b1-s16]"]


def test_out_of_memory_frees_memory_and_later_peaks_are_not_inflated(bench_dir):
    bench_dir.makeconftest(
        """
import torch
from gpt2_fixtures.bench import steps

_real = steps.infer_step

def _hungry_then_oom(model, batch, optimization, device):
    if batch.shape[0] == 2:
        def step():
            hog = torch.ones(600 * 1024 * 1024 // 4)  # 600 MiB, touched
            hog += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step, steps.StepState()
    return _real(model, batch, optimization, device)

steps.infer_step = _hungry_then_oom
"""
    )
    result = run(
        bench_dir,
        "--gpt2-batch-sizes",
        "2,1",
        "--gpt2-seq-lens",
        "16",
        "--gpt2-rounds",
        "2",
        "--gpt2-warmup",
        "0",
        "--gpt2-optimizations",
        "sdpa",
        "-m",
        "inference",
        "--benchmark-json=out.json",
        "-rs",
    )
    result.assert_outcomes(passed=1, skipped=1, deselected=2)
    # One skip line with the reason and the error's own text; no traceback; the grid goes on.
    result.stdout.fnmatch_lines(
        [
            "*sdpa-fp32-b2-s16: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB*"
            "memory released*"
        ]
    )
    assert "Traceback" not in result.stdout.str()
    doc = json.loads((bench_dir.path / "out.json").read_text())
    (bench,) = doc["benchmarks"]
    assert bench["name"] == "test_infer[sdpa-fp32-b1-s16]"
    (failed,) = doc["gpt2_bench"]["failed"]
    assert failed["fullname"] == "test_inference.py::test_infer[sdpa-fp32-b2-s16]"
    assert failed["kind"] == "oom" and failed["peak_memory_mb"] >= 600  # the hog was reached
    assert len(doc["gpt2_bench"]["not_selected"]) == 2  # the train cases, by -m
    # The case after the OOM ran and its peak does not carry the failed case's 600 MiB.
    assert bench["extra_info"]["peak_memory_mb"] < 600 + 300


def test_sigterm_keeps_finished_results_valid_and_the_next_run_is_clean(bench_dir):
    bench_dir.makeconftest(
        """
import os, signal
_done = []

def pytest_runtest_logfinish(nodeid, location):
    _done.append(nodeid)
    if len(_done) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
"""
    )
    result = run(
        bench_dir,
        *SMALL,
        "--gpt2-optimizations",
        "sdpa",
        "-m",
        "inference",
        "--benchmark-json=out.json",
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    doc = json.loads((bench_dir.path / "out.json").read_text())  # valid JSON
    assert [b["name"] for b in doc["benchmarks"]] == [
        "test_infer[sdpa-fp32-b1-s16]",
        "test_infer[sdpa-fp32-b1-s32]",
    ]
    (bench_dir.path / "conftest.py").unlink()
    again = run(bench_dir, *ONE_CASE, "-m", "inference", "--benchmark-json=out.json")
    again.assert_outcomes(passed=1, deselected=1)


def test_unknown_phase_marker_is_one_line(bench_dir):
    result = run(bench_dir, "-m", "trian or inference")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*-m names unknown marker(s) trian; phases are train, *"])


def test_results_hold_no_secrets(bench_dir, monkeypatch):
    secrets = {"WANDB_API_KEY": "wandb-secret-0123456789", "HF_TOKEN": "hf_secretTOKEN987654321"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    run(bench_dir, *ONE_CASE, "-m", "inference", "--benchmark-json=out.json").assert_outcomes(
        passed=1, deselected=1
    )
    text = (bench_dir.path / "out.json").read_text()
    assert json.loads(text)["benchmarks"]
    for value in secrets.values():
        assert value not in text


def test_a_results_file_that_cannot_be_written_keeps_its_old_content(bench_dir):
    # pytest-benchmark opens --benchmark-json for writing before it serialises: a failure
    # there used to leave an empty file where the previous results were.
    bench_dir.makeconftest(
        """
class Unprintable:
    def __repr__(self):
        raise RuntimeError("cannot serialise this")

def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["poison"] = Unprintable()
"""
    )
    old = '{"benchmarks": [], "previous": "run"}'
    (bench_dir.path / "out.json").write_text(old)
    result = run(bench_dir, *ONE_CASE, "-m", "inference", "--benchmark-json=out.json")
    assert result.ret != pytest.ExitCode.OK
    assert (bench_dir.path / "out.json").read_text() == old
    assert [p.name for p in bench_dir.path.iterdir() if p.name.startswith(".out.json")] == []


# -- unit level ---------------------------------------------------------------------------------


def test_unknown_markers():
    known = guards.registered_markers(["train: t", "inference: i", "gpu(x): g"])
    assert known == {"train", "inference", "gpu"}
    assert guards.unknown_markers("train or not gpu", known) == []
    assert guards.unknown_markers("inferance and train", known) == ["inferance"]
    assert guards.unknown_markers("", known) == []


def test_hub_unreachable_is_detected_without_waiting(monkeypatch):
    """A closed local port refuses at once: the loaders then look in the cache only."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connection refused
        for var in hub.OFFLINE_VARS:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        hub.hub_reachable.cache_clear()
        try:
            assert not hub.hub_reachable()
            assert hub.local_files_only()
            spec = models.resolve_model("no-such-org/no-such-model")
            with pytest.raises(hub.HubUnavailableError) as err:
                models.model_config(spec)
        finally:
            hub.hub_reachable.cache_clear()
    message = str(err.value)
    assert "\n" not in message and "hub offline" in message and "--gpt2-weights random" in message


def test_offline_environment_skips_the_probe(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        assert hub.offline_by_env() and not hub.hub_reachable()
    finally:
        hub.hub_reachable.cache_clear()


def test_wikitext_without_network_is_one_line_with_a_hint(monkeypatch, tmp_path):
    """No offline variable set and the hub unreachable: the cache is asked, no retry loop."""
    import datasets
    import huggingface_hub.constants

    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    with pytest.raises(hub.HubUnavailableError) as err:
        data.load_text("wikitext-2")
    assert datasets.config.HF_HUB_OFFLINE is True  # switched to cache-only before loading
    message = str(err.value)
    assert "\n" not in message and "--gpt2-dataset embedded" in message
    assert "OfflineModeIsEnabled" in message or "offline" in message.lower()


def test_no_remote_code_is_ever_trusted():
    """Every from_pretrained call in the package passes trust_remote_code=False explicitly."""
    root = os.path.join(os.path.dirname(__file__), "..", "gpt2_fixtures")
    for name in os.listdir(root):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8") as fh:
                text = fh.read()
            assert "trust_remote_code=True" not in text, name
            calls = len(re.findall(r"\.from_pretrained\(", text))
            assert calls <= text.count("trust_remote_code=False"), name
            assert "torch.load(" not in text or "weights_only=True" in text, name
