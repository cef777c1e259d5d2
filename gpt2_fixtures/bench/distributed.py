"""Distributed training benchmarks on torch.distributed: DDP and FSDP2, launched by ``torchrun``.

Every rank runs the same pytest session (``torchrun --nproc-per-node=N -m pytest
benchmarks/test_distributed.py``); only rank 0 writes results (``rank_zero_outputs_only``). A case
runs on the first ``world_size`` ranks of the job (a sub-group when smaller than the job), so one
launch can measure world size 1 and N and their scaling efficiency.

A round spans from a common start (a barrier in pedantic's setup) to the slowest rank's end (a
barrier after the step); per-round values are then reduced with MAX (docs/distributed.md, "Timing").
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist

from gpt2_fixtures.bench import data, measure, steps
from gpt2_fixtures.config import Case
from gpt2_fixtures.results.scaling import scaling_efficiency, scaling_key

STRATEGIES = ("ddp", "fsdp")
NOT_LAUNCHED = (
    "distributed benchmarks need a torchrun launch: "
    "torchrun --nproc-per-node=N -m pytest benchmarks/test_distributed.py (docs/distributed.md)"
)
# A rank that sits out a smaller world size waits in a barrier for the whole case; the default
# process-group timeout (10 min on NCCL) is too short for a large model's case.
TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("GPT2_BENCH_DIST_TIMEOUT_S", "1800")))

# Options that make pytest or our plugin write a file or talk to a service: rank 0 does it for
# the job, the other ranks must not (they would overwrite or duplicate rank 0's results).
RANK_ZERO_OPTIONS: dict[str, Any] = {
    "benchmark_json": None,
    "benchmark_save": None,
    "benchmark_autosave": False,
    "benchmark_save_data": False,
    "benchmark_histogram": None,
    "benchmark_cprofile_dump": None,
    "benchmark_compare": [],
    "benchmark_compare_fail": [],
    "gpt2_baseline": None,
    "gpt2_save_baseline": None,
    "gpt2_gate_markdown": None,
    "gpt2_gate_json": None,
    "gpt2_wandb": False,
    "junitxml": None,
}


# ---------------------------------------------------------------------------------------------
# Launch and options


@dataclass(frozen=True)
class Launch:
    """What the launcher (torchrun, or any launcher that sets the same variables) says."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int

    @property
    def nnodes(self) -> int:
        return max(1, self.world_size // self.local_world_size)


def launch_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``; None without."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    return Launch(
        rank=rank,
        local_rank=int(env.get("LOCAL_RANK", rank)),
        world_size=world,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


def has_peers(launch: Launch | None) -> bool:
    return launch is not None and launch.world_size > 1


def is_rank_zero(launch: Launch | None) -> bool:
    return launch is None or launch.rank == 0


def rank_zero_outputs_only(option: Any, launch: Launch | None) -> list[str]:
    """On ranks other than 0, switch off every option that writes results; returns their names."""
    if is_rank_zero(launch):
        return []
    changed = []
    for name, off in RANK_ZERO_OPTIONS.items():
        if hasattr(option, name) and getattr(option, name) != off:
            setattr(option, name, off)
            changed.append(name)
    return changed


def local_device(requested: str, launch: Launch | None, cuda_available: bool | None = None) -> str:
    """Under a launcher each rank uses its own GPU: ``auto``/``cuda`` become ``cuda:LOCAL_RANK``.

    An explicit ``cuda:N`` is kept (the user chose it), and so is ``cpu``.
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if launch is None or not cuda_available or requested not in ("auto", "cuda"):
        return requested
    return f"cuda:{launch.local_rank}"


def single_device_skip_reason(launch: Launch | None) -> str | None:
    """Single-device benchmarks under a job of several ranks would time N copies contending for
    the machine, and rank 0 would record its copy as if it ran alone."""
    if not has_peers(launch):
        return None
    assert launch is not None
    return (
        f"single-device benchmark under torchrun with {launch.world_size} ranks: run it with "
        "plain pytest (torchrun runs benchmarks/test_distributed.py)"
    )


def parse_strategies(text: str) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [v for v in values if v not in STRATEGIES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(
            f"unknown strategy in {text!r}: expected a comma-separated list of {list(STRATEGIES)}"
        )
    return values


def launch_info(launch: Launch | None, device: str) -> dict[str, Any]:
    """Facts for ``machine_info["gpt2"]``: how big the job was and which backend it used."""
    if launch is None:
        return {}
    return {
        "world_size": launch.world_size,
        "local_world_size": launch.local_world_size,
        "nnodes": launch.nnodes,
        "dist_backend": backend_for(device),
    }


def header(launch: Launch | None, strategies: Iterable[str], world_sizes: Iterable[int]) -> str:
    where = "not launched by torchrun" if launch is None else f"job of {launch.world_size} ranks"
    return (
        f"gpt2-bench distributed: {where}; strategies={','.join(strategies)} "
        f"world_sizes={','.join(map(str, world_sizes))}"
    )


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class DistCase:
    """A training case run by ``world_size`` ranks with one strategy.

    ``case.batch_size`` is the per-rank (micro-)batch: the job trains ``batch_size * world_size``
    samples a step (weak scaling, as DDP and FSDP are used).
    """

    case: Case
    strategy: str
    world_size: int

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: expected one of {STRATEGIES}")
        if self.world_size < 1:
            raise ValueError(f"world size must be >= 1: {self.world_size}")

    @property
    def id(self) -> str:
        """Stable id, e.g. ``ddp-sdpa-fp32-b1-s64-w2``: baselines match on it."""
        return f"{self.strategy}-{self.case.id}"


def grid(
    cases: Iterable[Case], strategies: Iterable[str], world_sizes: Iterable[int]
) -> list[DistCase]:
    """Strategy-major, then case, then world size ascending: world size 1 of a case runs right
    before its larger sizes, so its throughput is known when their scaling efficiency is."""
    sizes = sorted(set(world_sizes))
    return [
        DistCase(replace(c, extra=(*c.extra, ("w", w))), strategy, w)
        for strategy in strategies
        for c in cases
        for w in sizes
    ]


def world_sizes_or_default(requested: tuple[int, ...] | None, launch: Launch | None) -> list[int]:
    """The job's own size unless the user asked for others (e.g. ``1,2,4,8``)."""
    if requested:
        return sorted(requested)
    return [launch.world_size if launch is not None else 1]


def skip_reason(dcase: DistCase, launch: Launch | None) -> str | None:
    if launch is None:
        return NOT_LAUNCHED
    if dcase.world_size > launch.world_size:
        return (
            f"{dcase.id}: world size {dcase.world_size} needs {dcase.world_size} ranks; this job "
            f"has {launch.world_size} (torchrun --nproc-per-node / --nnodes)"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Process group


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


class World:
    """The job's process group and one sub-group per smaller world size (ranks 0..k-1)."""

    def __init__(self, launch: Launch, device: str, world_sizes: Iterable[int]) -> None:
        self.launch, self.device = launch, device
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(torch.device(device))
        if not dist.is_initialized():
            dist.init_process_group(
                backend_for(device),
                timeout=TIMEOUT,
                device_id=torch.device(device) if cuda else None,
            )
        self.groups: dict[int, Any] = {launch.world_size: dist.group.WORLD}
        # new_group is collective: every rank creates every group, in the same order.
        for k in sorted(set(world_sizes)):
            if k < launch.world_size:
                self.groups[k] = dist.new_group(ranks=list(range(k)))
        self.single_rank_tokens_per_s: dict[tuple[Any, ...], float] = {}

    @property
    def rank(self) -> int:
        return self.launch.rank

    @contextmanager
    def case(self, dcase: DistCase) -> Iterator[Any | None]:
        """All ranks enter and leave a case together; yields the case's group, or None on a
        rank that sits the case out (it waits in the closing barrier)."""
        barrier(None, self.device)
        try:
            yield self.groups[dcase.world_size] if self.rank < dcase.world_size else None
        finally:
            barrier(None, self.device)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(group: Any, device: str) -> None:
    """A barrier that, on NCCL, also waits for the device (the barrier is a device collective)."""
    dist.barrier(group=group)
    measure.synchronize(device)


def reduce_max(values: list[float], group: Any, device: str) -> list[float]:
    """Element-wise max over the group's ranks (every rank passes a list of the same length)."""
    if not values:
        return []
    comm = device if backend_for(device) == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=comm)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return [float(v) for v in tensor.tolist()]


def mean_over_ranks(value: float | None, group: Any, device: str) -> float | None:
    """The mean of a per-rank value (the loss of the global batch: equal micro-batches)."""
    if value is None:
        return None
    comm = device if backend_for(device) == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=comm)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return float(tensor.item()) / dist.get_world_size(group)


# ---------------------------------------------------------------------------------------------
# Model wrapping and data


def wrap(model: torch.nn.Module, strategy: str, group: Any, device: str) -> torch.nn.Module:
    """DDP with its defaults, or FSDP2 (``fully_shard``) per transformer block and at the root."""
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(device).index] if device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids, process_group=group)
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    mesh = DeviceMesh.from_group(group, torch.device(device).type)
    for block in shard_units(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)  # the root: embeddings (tied with the head) and final norm
    return model


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks transformers says must stay whole (``_no_split_modules``: GPT2Block)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def rank_batch(blocks: torch.Tensor, batch_size: int, group_rank: int) -> torch.Tensor:
    """Rank r trains blocks r*B .. r*B+B-1, so the ranks see different data, as in training.

    Past the end of the dataset the blocks wrap around (many ranks, large batches): the data
    does not change the time or memory of a step, only which tokens it sees.
    """
    n_blocks, seq_len = blocks.shape
    if n_blocks < batch_size:
        raise data.DataError(
            f"the dataset gives {n_blocks} blocks of {seq_len} tokens; batch size {batch_size} "
            "needs more: use a larger dataset, a smaller batch or sequence length"
        )
    index = (torch.arange(batch_size) + group_rank * batch_size) % n_blocks
    return blocks[index].clone()


def param_checksum(model: torch.nn.Module) -> str:
    """An exact fingerprint of the parameters' bits: per tensor, the sum of its elements read as
    integers of the same width, mixed with the tensor's position. Any changed element changes it,
    so replicas that DDP kept in sync have equal checksums."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    total = 0
    for i, p in enumerate(model.parameters()):
        bits = p.detach().reshape(-1).view(ints[p.element_size()])
        total = (total * 1_000_003 + int(bits.sum(dtype=torch.int64).item()) + i) % (1 << 61)
    return f"{total:016x}"


def gather_strings(value: str, group: Any) -> list[str]:
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, value, group=group)
    return [str(v) for v in out]


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class BarrierRoundHooks(measure.RoundHooks):
    """RoundHooks whose untimed setup ends in a barrier: all ranks start a round together."""

    group: Any = None
    device: str = "cpu"

    def setup(self) -> None:
        super().setup()
        barrier(self.group, self.device)


@dataclass(frozen=True)
class RankJob:
    """The ranks of ``group`` measuring one case (``measure.Job``): every rank runs the same
    calls; a round spans from a common start to the slowest rank's end."""

    group: Any
    device: str
    strategy: str

    @property
    def size(self) -> int:
        return int(dist.get_world_size(self.group))

    def hooks(
        self, memory: measure.MemoryTracker, control: measure.Control | None
    ) -> measure.RoundHooks:
        return BarrierRoundHooks(memory, control, group=self.group, device=self.device)

    def timed(self, step: Callable[[], None]) -> Callable[[], None]:
        def synced_step() -> None:
            step()
            barrier(self.group, self.device)  # the round ends when the slowest rank is done

        return synced_step

    def reduce(self, values: list[float]) -> list[float]:
        return reduce_max(values, self.group, self.device)

    def barrier(self) -> None:
        barrier(self.group, self.device)

    def keys(self) -> dict[str, Any]:
        return {"world_size": self.size, "strategy": self.strategy, "tokens_per_s_per_rank": None}


def train(benchmark: Any, bench: Any, world: World, dcase: DistCase, group: Any) -> dict[str, Any]:
    """Build, wrap, train and measure one case on this rank; the model is freed afterwards (a
    wrapped or sharded model must never be reused by another case)."""
    bench.free_model()
    try:
        info = _train(benchmark, bench, dcase, group)
    finally:
        bench.free_model()
    key = scaling_key(info)
    if dcase.world_size == 1 and info.get("tokens_per_s"):
        world.single_rank_tokens_per_s[key] = info["tokens_per_s"]
    info["scaling_efficiency"] = scaling_efficiency(
        info.get("tokens_per_s"), dcase.world_size, world.single_rank_tokens_per_s.get(key)
    )
    return info


def _train(benchmark: Any, bench: Any, dcase: DistCase, group: Any) -> dict[str, Any]:
    device, case = bench.settings.device, dcase.case
    model = bench.model(case)  # its parameters are counted as built, before sharding
    wrapped = wrap(model, dcase.strategy, group, device)
    batch = rank_batch(bench.blocks(case.seq_len), case.batch_size, dist.get_rank(group))
    step, state = steps.train_step(wrapped, batch.to(device), case.optimization, device)
    job = RankJob(group, device, dcase.strategy)
    measured = bench.measure(benchmark, case, step, model, job)
    info = measured.info
    if measured.times is not None:  # each rank's batch over the job's step time
        info["tokens_per_s_per_rank"] = info["tokens_per_s"] / job.size
    info["loss"] = mean_over_ranks(state.loss(), group, device)
    # DDP keeps full replicas that must stay bit-identical; FSDP shards differ by design.
    info["param_checksums"] = (
        gather_strings(param_checksum(model), group) if dcase.strategy == "ddp" else None
    )
    return info
