"""Every ``--gpt2-*`` option, declared once: a ``RunOptions`` field carries its flag's help and
parser, and the run's values are read back into the same dataclass by field name.

Adding an option is one field here; a field named like a keyword of ``settings.resolve`` reaches
it without more code. The gate's own options come from ``gate.gate_options()`` (one list for the
CLI and the plugin). Help texts end with the default, generated from the defaults' own tables.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpt2_fixtures import config as cfg
from gpt2_fixtures.bench import controls, distill, flops, generation, memory, settings
from gpt2_fixtures.bench import distributed as dist_bench
from gpt2_fixtures.plugin import aliases
from gpt2_fixtures.plugin.shard import Shard, parse_shard
from gpt2_fixtures.results import gate

GROUP = ("gpt2", "gpt2-bench: GPT-2 performance benchmarks")
_FLAG = "gpt2_flag"


@dataclass(frozen=True)
class Flag:
    """How one RunOptions field appears on the command line, as ``--gpt2-<name>``."""

    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    action: str | None = None
    name: str | None = None  # the flag after --gpt2-, when it differs from the field's name
    unset: str | None = None  # what a None default means, for the help text

    def kwargs(self, default: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"help": self.help_text(default)}
        if self.action:
            return out | {"action": self.action}
        named = {"type": self.type, "choices": self.choices, "metavar": self.metavar}
        return out | {"default": default} | {k: v for k, v in named.items() if v is not None}

    def help_text(self, default: Any) -> str:
        if self.action == "store_true":
            return self.help
        if default is None:
            return f"{self.help} Default: {self.unset or 'none'}."
        return f"{self.help} Default: %(default)s."


def option(default: Any, help: str, **flag: Any) -> Any:
    """A RunOptions field with its command-line flag."""
    return field(default=default, metadata={_FLAG: Flag(help, **flag)})


def per_device(table: Mapping[str, Mapping[str, Any]], key: str) -> str:
    """``"1,4 on CPU, 1,8,32 on CUDA"`` from a defaults table keyed by device type."""
    shown = {device: _shown(values[key]) for device, values in table.items()}
    if len(set(shown.values())) == 1:
        return f"{next(iter(shown.values()))} on {' and '.join(d.upper() for d in shown)}"
    return ", ".join(f"{value} on {device.upper()}" for device, value in shown.items())


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return "the main grid's" if value is None else str(value)


DEFAULTS, GEN, KD = settings.DEFAULTS, generation.DEFAULTS, distill.DEFAULTS


@dataclass(frozen=True)
class RunOptions:
    """The run's ``--gpt2-*`` values; fields named as ``settings.resolve``'s keywords go there."""

    # -- what runs and where (settings.resolve) ------------------------------------------------
    model: str | None = option(
        None, f"Preset {list(cfg.PRESETS)}, hub id or local directory.",
        unset=per_device(DEFAULTS, "model"),
    )  # fmt: skip
    weights: str = option(
        "auto",
        "random (offline, from the config), pretrained, or auto (random for presets, pretrained "
        "for a hub id or directory).",
        type=cfg.parse_weights,
    )
    tokenizer: str | None = option(
        None, "embedded (the shipped GPT-2 BPE), a hub id or a directory.",
        unset="the model's own tokenizer when its files exist, else the embedded one when the "
        "model's vocabulary is GPT-2's",
    )  # fmt: skip
    dataset: str = option(
        "embedded",
        "embedded (shipped corpus, offline), wikitext-2 (hub), or a text file or folder of "
        "*.txt files.",
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N.", type=cfg.parse_device)
    batch_sizes: tuple[int, ...] | None = option(
        None, "Comma-separated batch sizes.", type=cfg.parse_positive_ints,
        unset=per_device(DEFAULTS, "batch_sizes"),
    )  # fmt: skip
    seq_lens: tuple[int, ...] | None = option(
        None, "Comma-separated sequence lengths.", type=cfg.parse_positive_ints,
        unset=per_device(DEFAULTS, "seq_lens"),
    )  # fmt: skip
    optimizations: tuple[cfg.Optimization, ...] | None = option(
        None,
        "Comma-separated optimizations (eager, sdpa, sdpa-bf16, flash2, int8, sdpa-compile, ...).",
        type=cfg.parse_optimizations, name="optimizations",
        unset=per_device(DEFAULTS, "optimizations"),
    )  # fmt: skip
    rounds: int | None = option(
        None, "Measured rounds per case (alias: --benchmark-min-rounds).",
        type=cfg.parse_positive_int, unset=per_device(DEFAULTS, "rounds"),
    )  # fmt: skip
    warmup: int | None = option(
        None, "Warmup rounds per case, untimed (alias: --benchmark-warmup-iterations).",
        type=cfg.parse_non_negative_int, unset=per_device(DEFAULTS, "warmup"),
    )  # fmt: skip
    round_budget: float | None = option(
        None,
        "Seconds of timed rounds a case aims at: it times ceil(budget / its last warmup step) "
        "rounds, at least --gpt2-min-rounds and at most --gpt2-rounds (extra_info rounds_why). "
        "For quick runs: the long cases' fewer rounds cost the gate power (docs/measuring.md, "
        "Rounds); 0 times --gpt2-rounds everywhere.",
        type=cfg.parse_non_negative_float, metavar="SECONDS",
        unset=per_device(DEFAULTS, "round_budget"),
    )  # fmt: skip
    min_rounds: int | None = option(
        None, "The fewest rounds the round budget leaves a case (capped by --gpt2-rounds).",
        type=cfg.parse_positive_int, unset=per_device(DEFAULTS, "min_rounds"),
    )  # fmt: skip
    control: str = option(
        controls.TWIN,
        "The workload timed before every round and once after the last, that the gate's "
        "time/control ratio divides by (each round by the runs before and after it): "
        "twin is a plain-torch GPT-2 of the case's shape and phase, which slows down as the step "
        "does; matmul a fixed matmul loop, cheaper on large GPU cases (README, How it measures).",
        choices=tuple(controls.CONTROLS),
    )
    peak_tflops: float | None = option(
        None,
        "Peak TFLOP/s that MFU divides by, for every case; MFU stays empty on a device missing "
        "from the datasheet table (docs/optimizations.md), CPUs included.",
        type=flops.parse_peak_tflops, metavar="TFLOPS",
        unset="the dense datasheet peak of the GPU for the case's dtype",
    )  # fmt: skip
    # -- generate and distill phases (docs/phases.md) -----------------------------------------
    prompt_lens: tuple[int, ...] | None = option(
        None, "generate: comma-separated prompt lengths.", type=cfg.parse_positive_ints,
        unset=per_device(GEN, "prompt_lens"),
    )  # fmt: skip
    new_tokens: tuple[int, ...] | None = option(
        None, "generate: tokens generated per call, exactly (no EOS stop); comma-separated.",
        type=cfg.parse_positive_ints, unset=per_device(GEN, "new_tokens"),
    )  # fmt: skip
    teacher: str | None = option(
        None, "distill: teacher preset, hub id or directory.", unset=per_device(KD, "teacher")
    )
    student: str | None = option(
        None, "distill: student preset, hub id or directory (the tokenizer of the teacher).",
        unset=per_device(KD, "student"),
    )  # fmt: skip
    kd_temperature: float | None = option(
        None, "distill: softmax temperature T.", type=distill.parse_temperature,
        unset=str(distill.DEFAULT_TEMPERATURE),
    )  # fmt: skip
    kd_alpha: float | None = option(
        None,
        "distill: share of the T²-scaled KL term in the loss, the LM loss gets 1 - alpha.",
        type=distill.parse_alpha, unset=str(distill.DEFAULT_ALPHA),
    )  # fmt: skip
    # -- the process ----------------------------------------------------------------------------
    threads: int | None = option(
        None,
        "CPU threads for torch (torch.set_num_threads); 1 is steadier on a shared machine.",
        type=cfg.parse_positive_int, unset="torch's own (one per core)",
    )  # fmt: skip
    malloc: str = option(
        "steady",
        "CPU runs: steady serves every block from glibc's heap and never trims it on free, so "
        "warmed-up steps do not re-fault freed memory (README, How it measures); system leaves "
        "the allocator as it is.",
        choices=tuple(memory.MALLOC_MODES),
    )
    shard: Shard | None = option(  # noqa: RUF009 (a field(), as every option here)
        None,
        "Run only shard I of N (1-based) of the collected cases, assigned by case id so a case "
        "always lands on the same shard; merge the shards with `gpt2-bench merge`.",
        type=parse_shard, metavar="I/N", unset="all cases",
    )  # fmt: skip
    strategies: tuple[str, ...] = option(
        ",".join(dist_bench.STRATEGIES),
        "Distributed strategies to run under torchrun: ddp, fsdp (FSDP2).",
        type=dist_bench.parse_strategies,
    )
    world_sizes: tuple[int, ...] | None = option(
        None,
        "World sizes to run under torchrun, each on ranks 0..k-1 of the job, e.g. 1,2 for the "
        "scaling efficiency.",
        type=cfg.parse_positive_ints, unset="the job's own size",
    )  # fmt: skip
    # -- reports (logic in results/report/ and results/tracking.py) --------------------------
    wandb: bool = option(
        False,
        "Log the session to Weights & Biases as one run (needs the wandb extra). WANDB_* "
        "variables apply; WANDB_MODE=offline writes a local run under $WANDB_DIR/wandb/.",
        action="store_true",
    )
    wandb_project: str | None = option(
        None, "W&B project.", unset="$WANDB_PROJECT, else gpt2-bench"
    )
    wandb_entity: str | None = option(
        None, "W&B entity (user or team).", unset="$WANDB_ENTITY or your default"
    )
    wandb_run_name: str | None = option(
        None, "W&B run name.", unset="$WANDB_NAME or a generated name"
    )
    # -- the gate (logic in results/gate/; its thresholds follow from gate.gate_options) -----
    baseline: str | None = option(
        None,
        "Gate this run against a baseline result JSON at the end of the session; a regression "
        "fails the session (exit status 1; 3 when not every benchmark could be judged).",
        metavar="PATH",
    )
    gate_markdown: str | None = option(None, "Append the verdict as Markdown.", metavar="FILE")
    gate_json: str | None = option(None, "Write the verdict as JSON.", metavar="FILE")
    save_baseline: str | None = option(
        None,
        "Write this run's results (with per-round samples) atomically as a baseline file.",
        metavar="PATH",
    )

    def arguments_for(self, function: Callable[..., Any], **given: Any) -> dict[str, Any]:
        """The keyword arguments of ``function`` that are fields here (``given`` wins)."""
        names = inspect.signature(function).parameters
        return {name: getattr(self, name) for name in names if name not in given} | given


def flag_name(f: dataclasses.Field[Any]) -> str:
    flag: Flag = f.metadata[_FLAG]
    return flag.name or f.name.replace("_", "-")


def declarations() -> list[tuple[str, dict[str, Any]]]:
    """``(name after --gpt2-, argparse kwargs)`` for every option, in --help order."""
    ours = [
        (flag_name(f), f.metadata[_FLAG].kwargs(f.default)) for f in dataclasses.fields(RunOptions)
    ]
    return [*ours, *gate.gate_options(), gate.DEVICE_MISMATCH_OPTION]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*GROUP)
    for name, kwargs in declarations():
        group.addoption(f"--gpt2-{name}", **kwargs)


def dest(name: str) -> str:
    """The ``config.getoption`` key of ``--gpt2-<name>``."""
    return "gpt2_" + name.replace("-", "_")


RUN_OPTIONS = pytest.StashKey[RunOptions]()


def run_options(config: pytest.Config) -> RunOptions:
    """This run's values, read once; ``--benchmark-min-rounds`` and friends folded in."""
    if RUN_OPTIONS not in config.stash:
        values = {
            f.name: config.getoption(dest(flag_name(f))) for f in dataclasses.fields(RunOptions)
        }
        values |= aliases.folded(config, {name: values[name] for name in aliases.TARGETS})
        config.stash[RUN_OPTIONS] = RunOptions(**values)
    return config.stash[RUN_OPTIONS]


def gate_option(config: pytest.Config, name: str) -> Any:
    """One of gate.gate_options() by its argparse dest (e.g. ``time_basis``)."""
    return config.getoption(dest(name))
