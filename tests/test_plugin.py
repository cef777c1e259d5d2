"""The plugin end to end with pytester: options, parametrization, extra_info in the JSON."""

import json

import pytest
from pytester_bench import SMALL, make_bench_dir, run

pytest_plugins = ["pytester"]


@pytest.fixture
def bench_dir(pytester):
    return make_bench_dir(pytester)


@pytest.mark.slow
def test_json_has_every_key_for_both_phases(bench_dir):
    result = run(
        bench_dir, *SMALL, "--gpt2-optimizations", "eager,sdpa", "--benchmark-json=out.json"
    )
    result.assert_outcomes(passed=16)
    result.stdout.fnmatch_lines(
        ["gpt2-bench: device=cpu * model=tiny * optimizations=eager-fp32,sdpa-fp32*"]
    )
    doc = json.loads((bench_dir.path / "out.json").read_text())
    names = {b["name"] for b in doc["benchmarks"]}
    assert "test_train[eager-fp32-b2-s32]" in names and "test_infer[sdpa-fp32-b1-s16]" in names
    required = {
        "phase",
        "model",
        "optimization",
        "attn_implementation",
        "dtype",
        "device",
        "batch_size",
        "seq_len",
        "n_params",
        "samples_per_s",
        "samples_per_s_std",
        "tokens_per_s",
        "tokens_per_s_std",
        "peak_memory_mb",
        "peak_memory_mb_std",
        "memory_kind",
        "peak_reserved_mb",
        "control_round_s",
        "control_kind",
        "time_ratio_median",
    }
    for bench in doc["benchmarks"]:
        info = bench["extra_info"]
        assert required <= info.keys(), required - info.keys()
        assert len(bench["stats"]["data"]) == 3
        assert len(info["control_round_s"]) == 3
        assert info["control_kind"] == f"twin-{info['phase']}"
        median = bench["stats"]["median"]
        # Throughput is consistent with the timed rounds: batch / median round (contract 6).
        expected = info["batch_size"] / median
        assert info["samples_per_s"] == pytest.approx(expected)
        assert info["tokens_per_s"] == pytest.approx(expected * info["seq_len"])
        mean = sum(info["batch_size"] / t for t in bench["stats"]["data"]) / 3
        assert info["samples_per_s_mean"] == pytest.approx(mean)
        assert (
            median > 0 and info["peak_memory_mb"] > 0 and info["memory_kind"].startswith("cpu_rss")
        )
        assert info["n_params"] == 6_960_768 and info["device"] == "cpu"
        assert info["phase"] == ("train" if bench["name"].startswith("test_train") else "infer")
        if info["phase"] == "train":
            assert isinstance(info["loss"], float) and 5 < info["loss"] < 20
    gpt2 = doc["machine_info"]["gpt2"]
    assert {"torch", "transformers", "datasets", "device_name", "tf32_matmul"} <= gpt2.keys()


@pytest.mark.slow
def test_half_precision_on_cpu_is_skipped_by_default_and_runs_when_named(bench_dir):
    result = run(
        bench_dir,
        "--gpt2-batch-sizes",
        "1",
        "--gpt2-seq-lens",
        "16",
        "--gpt2-rounds",
        "1",
        "--gpt2-warmup",
        "0",
        "-m",
        "inference",
        "--gpt2-optimizations",
        "sdpa-bf16",
        "-rs",
    )
    result.assert_outcomes(passed=1, deselected=1)


@pytest.mark.slow
def test_skip_reason_for_flash2_on_cpu(bench_dir):
    result = run(
        bench_dir,
        "--gpt2-batch-sizes",
        "1",
        "--gpt2-seq-lens",
        "16",
        "--gpt2-optimizations",
        "flash2",
        "-rs",
    )
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*flash2-bf16: flash_attention_2 needs CUDA*this run: cpu*"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpt2-batch-sizes", "0"], "*--gpt2-batch-sizes: 0 must be >= 1*"),
        (["--gpt2-seq-lens", "abc"], "*'abc' is not a whole number*"),
        (["--gpt2-seq-lens", "2048"], "*model 'tiny' has n_positions=1024*"),
        (["--gpt2-optimizations", "turbo"], "*unknown optimization 'turbo'*"),
        (["--gpt2-device", "tpu"], "*unknown device 'tpu'*"),
        (["--gpt2-device", "cuda"], "*--gpt2-device cuda: this machine has 0 usable CUDA*"),
        (["--gpt2-model", "gpt5", "--gpt2-weights", "random"], "*unknown preset 'gpt5'*"),
        (["--gpt2-dataset", "/no/such/file.txt"], "*dataset '/no/such/file.txt' does not exist*"),
    ],
)
def test_bad_input_is_one_line_without_traceback(bench_dir, args, message):
    result = run(bench_dir, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.slow
def test_threads_option_reaches_header_and_machine_info(bench_dir):
    result = run(
        bench_dir,
        *["--gpt2-threads", "1", "--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "16"],
        *["--gpt2-rounds", "1", "--gpt2-optimizations", "sdpa", "-m", "inference"],
        "--benchmark-json=out.json",
    )
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["gpt2-bench: *cpu_threads=1*"])
    doc = json.loads((bench_dir.path / "out.json").read_text())
    assert doc["machine_info"]["gpt2"]["cpu_threads"] == 1


@pytest.mark.slow
def test_control_option_picks_the_workload(bench_dir):
    common = ["--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "16", "--gpt2-rounds", "2"]
    common += ["--gpt2-optimizations", "sdpa", "-m", "inference"]
    result = run(bench_dir, *common, "--gpt2-control", "matmul", "--benchmark-json=m.json")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["gpt2-bench: *control=matmul*"])
    (bench,) = json.loads((bench_dir.path / "m.json").read_text())["benchmarks"]
    assert bench["extra_info"]["control_kind"] == "matmul"
    assert len(bench["extra_info"]["control_round_s"]) == 2
    bad = run(bench_dir, *common, "--gpt2-control", "sleep")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--gpt2-control: invalid choice: 'sleep'*"])
