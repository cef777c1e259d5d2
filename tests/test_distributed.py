"""Distributed benchmarks: pure helpers, and a real 2-process gloo job launched by torchrun."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

# Imported once here: pytester's in-process runs drop the modules they import, and pyarrow's
# extension types (under datasets) refuse a second import.
import datasets  # noqa: F401
import pytest
import torch
from helpers import result_entry

from gpt2_fixtures.bench import distributed as d
from gpt2_fixtures.config import Case, Optimization
from gpt2_fixtures.results import scaling

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TWO_RANKS = d.Launch(rank=0, local_rank=0, world_size=2, local_world_size=2)


# ---------------------------------------------------------------------------------------------
# Launch and options


def test_launch_env_reads_torchrun_variables() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    launch = d.launch_env(env)
    assert launch == d.Launch(rank=5, local_rank=1, world_size=8, local_world_size=4)
    assert launch is not None and launch.nnodes == 2
    assert d.launch_env({}) is None
    assert d.launch_env({"RANK": "0", "WORLD_SIZE": "1"}) == d.Launch(0, 0, 1, 1)


def test_only_rank_zero_keeps_output_options() -> None:
    def options() -> argparse.Namespace:
        return argparse.Namespace(
            benchmark_json=Path("out.json"),
            benchmark_autosave=True,
            benchmark_save="run",
            gpt2_save_baseline="base.json",
            gpt2_wandb=True,
            gpt2_model="tiny",
        )

    rank1 = options()
    changed = d.rank_zero_outputs_only(rank1, d.Launch(1, 1, 2, 2))
    assert rank1.benchmark_json is None and rank1.benchmark_save is None
    assert rank1.benchmark_autosave is False and rank1.gpt2_wandb is False
    assert rank1.gpt2_save_baseline is None and rank1.gpt2_model == "tiny"
    assert set(changed) == {
        "benchmark_json",
        "benchmark_autosave",
        "benchmark_save",
        "gpt2_save_baseline",
        "gpt2_wandb",
    }
    rank0 = options()
    assert d.rank_zero_outputs_only(rank0, TWO_RANKS) == []
    assert d.rank_zero_outputs_only(rank0, None) == []
    assert rank0 == options()


def test_each_rank_gets_its_own_gpu() -> None:
    launch = d.Launch(rank=3, local_rank=1, world_size=4, local_world_size=2)
    assert d.local_device("auto", launch, cuda_available=True) == "cuda:1"
    assert d.local_device("cuda", launch, cuda_available=True) == "cuda:1"
    assert d.local_device("cuda:0", launch, cuda_available=True) == "cuda:0"  # explicit: kept
    assert d.local_device("auto", launch, cuda_available=False) == "auto"
    assert d.local_device("cpu", launch, cuda_available=True) == "cpu"
    assert d.local_device("auto", None, cuda_available=True) == "auto"


def test_parse_strategies() -> None:
    assert d.parse_strategies("fsdp, DDP,fsdp") == ("fsdp", "ddp")
    for bad in ("zero3", "", "ddp,deepspeed"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a comma-separated list"):
            d.parse_strategies(bad)


NOOP_BENCH = """
def test_noop(benchmark):
    benchmark.pedantic(lambda: None, rounds=3, iterations=1)
"""


@pytest.mark.parametrize(("rank", "writes"), [("0", True), ("1", False)])
def test_plugin_lets_only_rank_zero_write(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, rank: str, writes: bool
) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    pytester.makepyfile(test_bench=NOOP_BENCH)
    result = pytester.runpytest(
        "-p", "gpt2_fixtures.plugin", "-p", "no:cacheprovider", "--gpt2-device", "cpu",
        "--benchmark-json=out.json", "--benchmark-autosave", "--benchmark-storage=file://store",
        "--gpt2-save-baseline=base.json",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    written = sorted(p.name for p in pytester.path.rglob("*.json"))
    if writes:  # the JSON, the baseline and one autosaved run
        assert len(written) == 3 and {"out.json", "base.json"} <= set(written), written
    else:
        assert written == []


# ---------------------------------------------------------------------------------------------
# Cases


def test_grid_ids_and_order() -> None:
    cases = [
        Case("train", Optimization(), 1, 64),
        Case("train", Optimization(attention="eager"), 8, 128),
    ]
    ids = [c.id for c in d.grid(cases, ("ddp", "fsdp"), [2, 1])]
    assert ids == [
        "ddp-sdpa-fp32-b1-s64-w1",
        "ddp-sdpa-fp32-b1-s64-w2",
        "ddp-eager-fp32-b8-s128-w1",
        "ddp-eager-fp32-b8-s128-w2",
        "fsdp-sdpa-fp32-b1-s64-w1",
        "fsdp-sdpa-fp32-b1-s64-w2",
        "fsdp-eager-fp32-b8-s128-w1",
        "fsdp-eager-fp32-b8-s128-w2",
    ]
    with pytest.raises(ValueError, match="unknown strategy"):
        d.DistCase(cases[0], "zero", 1)


def test_world_sizes_and_skips() -> None:
    assert d.world_sizes_or_default(None, TWO_RANKS) == [2]
    assert d.world_sizes_or_default((4, 1), TWO_RANKS) == [1, 4]
    assert d.world_sizes_or_default(None, None) == [1]
    [w1, w4] = d.grid([Case("train", Optimization(), 1, 64)], ("ddp",), [1, 4])
    assert d.skip_reason(w1, None) == d.NOT_LAUNCHED
    assert d.skip_reason(w1, TWO_RANKS) is None
    assert "needs 4 ranks; this job has 2" in str(d.skip_reason(w4, TWO_RANKS))
    assert d.single_device_skip_reason(None) is None
    assert d.single_device_skip_reason(d.Launch(0, 0, 1, 1)) is None
    assert "plain pytest" in str(d.single_device_skip_reason(TWO_RANKS))


# ---------------------------------------------------------------------------------------------
# Scaling efficiency


def _bench(strategy: str, world_size: int, tokens_per_s: float, **extra: Any) -> dict[str, Any]:
    info = {"device_name": "cpu0", "strategy": strategy, "world_size": world_size}
    info |= {"tokens_per_s": tokens_per_s, "scaling_efficiency": None}
    return result_entry(tail=f"-w{world_size}", **(info | extra))


def test_scaling_efficiency_arithmetic() -> None:
    # 4 ranks at 3,200 tokens/s = 800 per rank, against 1,000 on one rank: 80 %.
    assert scaling.scaling_efficiency(3200.0, 4, 1000.0) == pytest.approx(0.8)
    assert scaling.scaling_efficiency(1000.0, 1, 1000.0) == 1.0
    assert scaling.scaling_efficiency(None, 4, 1000.0) is None
    assert scaling.scaling_efficiency(3200.0, 4, None) is None


def test_fill_scaling_efficiency_matches_the_same_case() -> None:
    benches = [
        _bench("ddp", 1, 1000.0),
        _bench("ddp", 2, 1800.0),
        _bench("fsdp", 2, 1500.0),  # no fsdp world size 1: stays null
        _bench("ddp", 2, 900.0, seq_len=128),  # another case: stays null
        _bench("ddp", 4, 3000.0, scaling_efficiency=0.5),  # already set: kept
    ]
    assert scaling.fill_scaling_efficiency(benches) == 2  # ddp w1 (1.0) and ddp w2
    efficiencies = [b["extra_info"]["scaling_efficiency"] for b in benches]
    assert efficiencies == [1.0, pytest.approx(0.9), None, None, 0.5]


# ---------------------------------------------------------------------------------------------
# Data and parameters


def test_rank_batches_are_disjoint_and_wrap_around() -> None:
    blocks = torch.arange(5 * 3).reshape(5, 3)
    assert d.rank_batch(blocks, 2, 0).tolist() == blocks[0:2].tolist()
    assert d.rank_batch(blocks, 2, 1).tolist() == blocks[2:4].tolist()
    assert d.rank_batch(blocks, 2, 2).tolist() == blocks[[4, 0]].tolist()  # past the end: wraps
    with pytest.raises(d.data.DataError, match="batch size 6 needs more"):
        d.rank_batch(blocks, 6, 0)


def test_param_checksum_sees_a_one_bit_change() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2, dtype=torch.bfloat16))
    before = d.param_checksum(model)
    assert d.param_checksum(model) == before
    with torch.no_grad():
        weight = model[0].weight.view(-1).view(torch.int32)
        weight[3] ^= 1  # flip the lowest mantissa bit of one element
    assert d.param_checksum(model) != before


def test_shard_units_are_the_transformer_blocks() -> None:
    from transformers import AutoModelForCausalLM, GPT2Config

    config = GPT2Config(n_layer=3, n_head=2, n_embd=16, vocab_size=64, n_positions=32)
    model = AutoModelForCausalLM.from_config(config)
    assert [type(m).__name__ for m in d.shard_units(model)] == ["GPT2Block"] * 3


# ---------------------------------------------------------------------------------------------
# The benchmark file without and with torchrun


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    # Loopback only: gloo's own connections on lo, the rendezvous store on 127.0.0.1.
    return env | {"GLOO_SOCKET_IFNAME": "lo", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in its own process group; on timeout kill the group (torchrun's workers too)."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{cmd[:6]} ran past {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TINY = [
    "-p", "no:cacheprovider", "--gpt2-device", "cpu", "--gpt2-model", "tiny",
    "--gpt2-optimizations", "sdpa-fp32", "--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "64",
    "--gpt2-rounds", "2", "--gpt2-warmup", "0",
]  # fmt: skip


def test_plain_pytest_skips_with_the_command_to_run() -> None:
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_distributed.py", *TINY, "-rs"]
    proc = _run(cmd, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "2 skipped" in proc.stdout
    assert "torchrun --nproc-per-node=N -m pytest benchmarks/test_distributed.py" in proc.stdout


@pytest.fixture(scope="module")
def two_rank_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One torchrun job: 2 gloo ranks on loopback, ddp and fsdp, world sizes 1 and 2."""
    tmp = tmp_path_factory.mktemp("dist")
    out, storage = tmp / "out.json", tmp / "storage"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    cmd = [*torchrun, "-m", "pytest", "benchmarks/test_distributed.py", *TINY]
    cmd += ["--gpt2-strategies", "ddp,fsdp", "--gpt2-world-sizes", "1,2"]
    cmd += [
        f"--benchmark-json={out}",
        "--benchmark-autosave",
        f"--benchmark-storage=file://{storage}",
    ]
    proc = _run(cmd, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return json.loads(out.read_text()), storage


@pytest.mark.distributed
def test_two_gloo_ranks_write_one_result_file(two_rank_job: tuple[dict[str, Any], Path]) -> None:
    doc, storage = two_rank_job
    saved = list(storage.rglob("*.json"))
    assert len(saved) == 1, saved  # rank 1 autosaved nothing
    assert doc["machine_info"]["gpt2"]["world_size"] == 2
    assert doc["machine_info"]["gpt2"]["dist_backend"] == "gloo"
    names = {b["name"] for b in doc["benchmarks"]}
    assert names == {
        f"test_train_distributed[{s}-sdpa-fp32-b1-s64-w{w}]"
        for s in ("ddp", "fsdp")
        for w in (1, 2)
    }


@pytest.mark.distributed
def test_two_gloo_ranks_throughput_and_scaling(two_rank_job: tuple[dict[str, Any], Path]) -> None:
    doc, _ = two_rank_job
    by_id = {
        (b["extra_info"]["strategy"], b["extra_info"]["world_size"]): b for b in doc["benchmarks"]
    }
    for (strategy, world), bench in by_id.items():
        info, times = bench["extra_info"], bench["stats"]["data"]
        assert info["phase"] == "train" and info["batch_size"] == 1 and info["seq_len"] == 64
        assert info["tokens_per_s"] > 0 and info["samples_per_s"] > 0
        assert info["tokens_per_s_per_rank"] == pytest.approx(info["tokens_per_s"] / world)
        assert info["tokens_per_s"] == pytest.approx(info["samples_per_s"] * 64)
        # Throughput comes from the per-round max over ranks, never faster than rank 0's rounds.
        assert info["tokens_per_s"] <= statistics.fmean(64 * world / t for t in times) * (1 + 1e-9)
        assert info["peak_memory_mb"] > 0 and len(info["control_round_s"]) == len(times) == 2
        assert math.isfinite(info["loss"])
        single = by_id[(strategy, 1)]["extra_info"]["tokens_per_s"]
        expected = info["tokens_per_s"] / world / single
        assert info["scaling_efficiency"] == pytest.approx(expected)


@pytest.mark.distributed
def test_ddp_replicas_stay_identical(two_rank_job: tuple[dict[str, Any], Path]) -> None:
    doc, _ = two_rank_job
    info = {(b["extra_info"]["strategy"], b["extra_info"]["world_size"]): b["extra_info"]
            for b in doc["benchmarks"]}  # fmt: skip
    ddp2 = info[("ddp", 2)]["param_checksums"]
    assert len(ddp2) == 2 and ddp2[0] == ddp2[1]
    assert info[("ddp", 1)]["param_checksums"][0] != ddp2[0]  # w2 also trained on block 1
    assert info[("fsdp", 2)]["param_checksums"] is None
    # Same seed, same batches, same AdamW: FSDP trains what DDP trains (up to rounding).
    for world in (1, 2):
        assert info[("fsdp", world)]["loss"] == pytest.approx(
            info[("ddp", world)]["loss"], rel=1e-4
        )
