"""The plugin end to end with pytester: options, parametrization, extra_info in the JSON."""

import json

import pytest
from helpers import SMALL, run


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
        # Throughput from the timed rounds: batch / median round (docs/measuring.md, "Throughput").
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


# -- options: one declaration each, RunOptions by field name (fast, in-process parsing) --------

import dataclasses  # noqa: E402
import inspect  # noqa: E402

from gpt2_fixtures.bench import settings  # noqa: E402
from gpt2_fixtures.plugin import options  # noqa: E402


def parse(pytester, *args):
    config = pytester.parseconfig("-p", "gpt2_fixtures.plugin", *args)
    return options.run_options(config)


def test_every_resolve_keyword_is_a_run_option_and_every_flag_is_declared_once():
    fields = {f.name for f in dataclasses.fields(options.RunOptions)}
    assert set(inspect.signature(settings.resolve).parameters) <= fields
    names = [name for name, _ in options.declarations()]
    assert len(names) == len(set(names))
    assert {"optimizations", "rounds", "tokenizer", "threshold", "allow-device-mismatch"} <= set(
        names
    )


def test_help_states_the_defaults_from_their_tables():
    table = {"cpu": {"k": (1, 4), "same": 20}, "cuda": {"k": (1, 8, 32), "same": 20}}
    assert options.per_device(table, "k") == "1,4 on CPU, 1,8,32 on CUDA"
    assert options.per_device(table, "same") == "20 on CPU and CUDA"
    helps = dict(options.declarations())
    assert options.per_device(settings.DEFAULTS, "batch_sizes") in helps["batch-sizes"]["help"]
    assert "Default: %(default)s." in helps["dataset"]["help"]


def test_run_options_are_read_by_field_name(pytester):
    opts = parse(pytester, "--gpt2-optimizations", "eager", "--gpt2-rounds", "3")
    assert [r.id for r in opts.optimizations] == ["eager-fp32"] and opts.rounds == 3
    assert opts.warmup is None and opts.dataset == "embedded"


def test_tokenizer_option_reaches_resolve_by_its_keyword(pytester):
    opts = parse(pytester, "--gpt2-tokenizer", "embedded")
    assert opts.tokenizer == "embedded"
    assert parse(pytester).tokenizer is None

    def resolve(*, device: str = "auto", tokenizer: str | None = None) -> None: ...

    assert opts.arguments_for(resolve, device="cpu") == {"device": "cpu", "tokenizer": "embedded"}


@pytest.mark.parametrize(
    ("args", "rounds", "warmup"),
    [
        ([], None, None),
        (["--benchmark-min-rounds", "7"], 7, None),
        (["--benchmark-min-rounds=5"], 5, None),  # explicit, although pytest-benchmark's default
        (["--benchmark-warmup-iterations", "0"], None, 0),
        (["--benchmark-min-rounds=4", "--gpt2-rounds=4"], 4, None),
    ],
)
def test_benchmark_round_options_are_aliases(pytester, args, rounds, warmup):
    opts = parse(pytester, *args)
    assert (opts.rounds, opts.warmup) == (rounds, warmup)


def test_conflicting_round_options_are_refused_in_one_line(pytester):
    with pytest.raises(pytest.UsageError) as err:
        parse(pytester, "--benchmark-min-rounds=7", "--gpt2-rounds=3")
    message = str(err.value)
    assert "--benchmark-min-rounds 7 conflicts with --gpt2-rounds 3" in message
    assert "\n" not in message
    with pytest.raises(pytest.UsageError, match="must be a whole number >= 0"):
        parse(pytester, "--benchmark-warmup-iterations=-1")


# -- what the result file says ran: options, params, rounds (README, "What each case records") --

SUMMARY_PROBE = """
from gpt2_fixtures.results.report import tables as report_tables

_real = report_tables.console_summary

def _probe(benchmarks):
    with open("summary_probe.txt", "w") as fh:
        fh.write(str(bool(benchmarks) and all(b["stats"].get("data") for b in benchmarks)))
    return _real(benchmarks)

report_tables.console_summary = _probe
"""


def test_json_says_the_rounds_that_ran_and_the_case_in_plain_fields(bench_dir):
    bench_dir.makeconftest(SUMMARY_PROBE)
    result = run(
        bench_dir,
        *["--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "16", "--gpt2-optimizations", "sdpa"],
        *["--benchmark-min-rounds", "2", "--benchmark-warmup-iterations", "0", "-m", "inference"],
        "--benchmark-json=out.json",
    )
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["gpt2-bench: * rounds=2 warmup=0 *"])
    (bench,) = json.loads((bench_dir.path / "out.json").read_text())["benchmarks"]
    assert len(bench["stats"]["data"]) == 2
    assert bench["options"]["rounds"] == bench["options"]["min_rounds"] == 2
    assert bench["options"]["warmup"] == bench["options"]["warmup_rounds"] == 0
    assert bench["options"]["max_time"] is None  # pedantic mode does not calibrate
    assert bench["params"] == {
        "phase": "infer",
        "optimization": "sdpa-fp32",
        "batch_size": 1,
        "seq_len": 16,
    }
    assert (bench_dir.path / "summary_probe.txt").read_text() == "True"


# -- failed and deselected cases in the results (README, "What each case records"; docs/gate.md) -

RECORDED = """
import math
import torch

def test_oom(benchmark):
    def step():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    benchmark.pedantic(step, rounds=1)

def test_nan(benchmark):
    benchmark.pedantic(lambda: None, rounds=2)
    loss = float("nan")
    assert math.isfinite(loss), f"loss is {loss}"

def test_ok(benchmark):
    benchmark.pedantic(lambda: None, rounds=3)

def test_other(benchmark):
    benchmark.pedantic(lambda: None, rounds=3)
"""

GATE_PROBE = """
import json
from types import SimpleNamespace
from gpt2_fixtures.results import gate

def _gate_documents(baseline, current, settings, allow):
    with open("judged.json", "w") as fh:
        json.dump(current, fh)
    return SimpleNamespace(exit_code=3, failed=False)

gate.gate_documents = _gate_documents
gate.write_outputs = lambda result, markdown, json_path: None
gate.format_table = lambda result: "gpt2 gate: probe, not fully judged"
"""


def test_failed_and_deselected_cases_are_recorded_and_the_gate_sets_the_exit_status(pytester):
    pytester.makepyfile(test_cases=RECORDED)
    first = run(
        pytester,
        *["-k", "not other", "--benchmark-json=out.json", "--gpt2-save-baseline=base.json"],
        "--benchmark-autosave",
    )
    first.assert_outcomes(passed=1, failed=1, skipped=1, deselected=1)
    out = json.loads((pytester.path / "out.json").read_text())
    section = out["gpt2_bench"]
    assert section["version"] == "0.3.0"
    by_name = {f["name"]: f for f in section["failed"]}
    assert set(by_name) == {"test_oom", "test_nan"}
    oom, nan = by_name["test_oom"], by_name["test_nan"]
    assert oom["kind"] == "oom" and oom["fullname"] == "test_cases.py::test_oom"
    assert "CUDA out of memory" in oom["reason"] and oom["peak_memory_mb"] > 0
    assert nan["kind"] == "error" and "loss is nan" in nan["reason"]
    assert nan["peak_memory_mb"] is None and "\n" not in nan["reason"]
    assert section["not_selected"] == ["test_cases.py::test_other"]
    assert [b["name"] for b in out["benchmarks"]] == ["test_ok"]
    # --gpt2-save-baseline writes the same document, the commit as pytest-benchmark records it.
    base = json.loads((pytester.path / "base.json").read_text())
    assert base["gpt2_bench"] == section
    assert base["commit_info"] == out["commit_info"] and base["commit_info"]

    pytester.makeconftest(GATE_PROBE)
    second = run(pytester, "-k", "ok", "--benchmark-compare", "--gpt2-baseline=base.json")
    assert second.ret == 3, second.stdout.str()[
        -2000:
    ]  # the gate's exit code (docs/gate.md, "Output")
    # pytest-benchmark's compare table sorts its rows by time, so the two rows come in either order
    second.stdout.fnmatch_lines(["*test_ok (0001_*"])
    second.stdout.fnmatch_lines(["*test_ok (NOW)*", "*probe*"])
    judged = json.loads((pytester.path / "judged.json").read_text())
    assert judged["gpt2_bench"]["not_selected"] == [
        "test_cases.py::test_oom",
        "test_cases.py::test_nan",
        "test_cases.py::test_other",
    ]
    assert [b["name"] for b in judged["benchmarks"]] == ["test_ok"]


def test_failure_reasons_are_one_line():
    from gpt2_fixtures.bench import settings as bench_settings
    from gpt2_fixtures.plugin import outcomes

    assert outcomes.one_line(AssertionError("loss is nan\nassert False")) == (
        "AssertionError: loss is nan"
    )
    assert outcomes.one_line(bench_settings.SettingsError("bad option")) == "bad option"
    assert outcomes.one_line(RuntimeError()) == "RuntimeError"
    assert len(outcomes.one_line(ValueError("x" * 1000))) <= 300


def test_process_settings_apply_only_when_benchmarks_are_collected(pytester, monkeypatch):
    """`pytest tests` loads the plugin through the root conftest.py; only a run that collects
    benchmarks sets CPU threads, the host allocator and the SIGTERM handler."""
    from helpers import make_bench_dir

    from gpt2_fixtures.bench import memory
    from gpt2_fixtures.bench import settings as bench_settings
    from gpt2_fixtures.plugin import guards

    applied: list[str] = []
    monkeypatch.setattr(guards, "sigterm_as_interrupt", lambda: applied.append("sigterm"))
    monkeypatch.setattr(memory, "configure_malloc", lambda mode: applied.append(mode))
    monkeypatch.setattr(bench_settings, "set_cpu_threads", lambda n: applied.append(f"t{n}"))
    pytester.makepyfile(test_unit="def test_one():\n    assert True\n")
    unit = pytester.runpytest("-p", "gpt2_fixtures.plugin", "--gpt2-device", "cpu", "test_unit.py")
    assert unit.ret == 0 and applied == []
    make_bench_dir(pytester)
    bench = pytester.runpytest(
        "-p", "gpt2_fixtures.plugin", "--gpt2-device", "cpu", "--collect-only", "test_inference.py"
    )
    assert bench.ret == 0 and applied == ["tNone", "steady", "sigterm"]
