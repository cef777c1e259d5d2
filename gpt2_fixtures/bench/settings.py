"""What the options resolve to: ``Settings``, with the device-dependent defaults filled in.

``resolve`` checks what can be checked before collection (device, lengths against the model's
positions, dataset path, phase options, tokenizer), so a bad value is one line at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt2_fixtures.bench import controls, data, distill, generation, memory, models
from gpt2_fixtures.bench.environment import device_name
from gpt2_fixtures.bench.measure import RoundPlan
from gpt2_fixtures.config import PRESETS, Optimization, parse_optimizations


class SettingsError(ValueError):
    """An option value that cannot run here; the message is one line."""


# Defaults per device type. The CPU grid finishes in about 3 minutes on a 2-core machine with the
# tiny preset; the CUDA grid is the classic sweep (batch 1/8/32 x length 128/512/1024).
DEFAULTS = {
    "cpu": {
        "model": "tiny",
        "batch_sizes": (1, 4),
        "seq_lens": (64, 256),
        # int8 runs in the infer and generate phases (train and distill skip it): +16 s on a
        # quiet 2-core machine, 68 -> 84 s for the whole grid (docs/optimizations.md).
        "optimizations": "eager-fp32,sdpa-fp32,int8",
        "rounds": 20,
        "warmup": 2,
        # Off: rounds = ceil(budget / warm step) within [min_rounds, rounds] cut the one-thread
        # grid's rounds and control by 40%, and the gate's +10% detection from 83% to 68% with
        # them (docs/measuring.md, "Rounds: a time budget per case"). Opt in for quick runs.
        "round_budget": 0.0,
        "min_rounds": 10,
    },
    "cuda": {
        "model": "gpt2",
        "batch_sizes": (1, 8, 32),
        "seq_lens": (128, 512, 1024),
        # attention x precision, FlashAttention-2, int8, torch.compile (docs/optimizations.md,
        # "Default grids"). padvocab and fusedadam are opt-in: name them.
        "optimizations": (
            "eager-fp32,sdpa-fp32,eager-bf16,sdpa-bf16,flash2-bf16,sdpa-fp16,int8,sdpa-bf16-compile"
        ),
        "rounds": 20,
        "warmup": 3,
        "round_budget": 0.0,
        "min_rounds": 10,
    },
}


@dataclass(frozen=True)
class Settings:
    device: str
    model: str
    weights: str
    dataset: str
    batch_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    optimizations: tuple[Optimization, ...]
    optimizations_explicit: bool
    rounds: int
    warmup: int
    n_positions: int
    # --gpt2-round-budget / --gpt2-min-rounds: rounds per case from its warm step (RoundPlan);
    # a budget of 0 times ``rounds`` everywhere.
    round_budget: float = 0.0
    min_rounds: int = 10
    # Phase-specific sweeps (docs/phases.md); None only when built by hand without them.
    generate: generation.GenerateOptions | None = None
    distill: distill.DistillOptions | None = None
    # --gpt2-peak-tflops: the peak MFU divides by, instead of the device table's (flops.py).
    peak_tflops: float | None = None
    # --gpt2-control: the workload timed before every round (controls.py).
    control: str = controls.TWIN
    # --gpt2-tokenizer, resolved (data.choose_tokenizer): what tokenizes the text, and why.
    tokenizer: data.TokenizerChoice = data.EMBEDDED

    def round_plan(self) -> RoundPlan:
        """How many rounds a case times (``measure.RoundPlan``)."""
        return RoundPlan(self.rounds, self.warmup, self.round_budget, self.min_rounds)

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def header(self) -> str:
        optimizations = ",".join(r.id for r in self.optimizations)
        return (
            f"gpt2-bench: device={self.device} ({device_name(self.device)}) model={self.model} "
            f"weights={self.weights} dataset={self.dataset} "
            f"batch_sizes={','.join(map(str, self.batch_sizes))} "
            f"seq_lens={','.join(map(str, self.seq_lens))} optimizations={optimizations} "
            f"rounds={self.rounds} warmup={self.warmup} "
            + (f"round_plan={self.round_plan().setup_key()!r} " if self.round_budget else "")
            + f"cpu_threads={torch.get_num_threads()} "
            f"malloc={memory.malloc_setting()} control={self.control} "
            f"tokenizer={self.tokenizer.header()}"
            + "".join(f"\n  {p.header()}" for p in (self.generate, self.distill) if p)
        )


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    index = int(requested.split(":")[1]) if ":" in requested else 0
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        build = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'}"
        raise SettingsError(
            f"--gpt2-device {requested}: this machine has {count} usable CUDA device(s) "
            f"({build}); use --gpt2-device cpu or auto"
        )
    return f"cuda:{index}"


def set_cpu_threads(threads: int | None) -> None:
    """Intra-op threads for CPU kernels; recorded as ``cpu_threads`` in machine_info.

    On a shared machine torch's one thread per core makes small steps wait on each other's
    OpenMP threads (a 32-token tiny generation: 4-5 s on two threads under load, 0.6 s on one).
    """
    if threads is not None:
        torch.set_num_threads(threads)


def _model_facts(spec: models.ModelSpec) -> tuple[int, int]:
    """(n_positions, vocab_size) of the model, without loading any weights."""
    if spec.source == "preset" and not spec.pretrained:
        preset = PRESETS[spec.name]
        return preset.n_positions, preset.vocab_size
    config = models.model_config(spec)
    return models.max_positions(config), int(config.vocab_size)


def resolve(
    *,
    device: str = "auto",
    model: str | None = None,
    weights: str = "auto",
    dataset: str = "embedded",
    batch_sizes: tuple[int, ...] | None = None,
    seq_lens: tuple[int, ...] | None = None,
    optimizations: tuple[Optimization, ...] | None = None,
    rounds: int | None = None,
    warmup: int | None = None,
    round_budget: float | None = None,
    min_rounds: int | None = None,
    prompt_lens: tuple[int, ...] | None = None,
    new_tokens: tuple[int, ...] | None = None,
    teacher: str | None = None,
    student: str | None = None,
    kd_temperature: float | None = None,
    kd_alpha: float | None = None,
    peak_tflops: float | None = None,
    control: str = controls.TWIN,
    tokenizer: str | None = None,
) -> Settings:
    """Fill the device-dependent defaults and check what can be checked before collection."""
    dev = resolve_device(device)
    kind = "cuda" if dev.startswith("cuda") else "cpu"
    defaults = DEFAULTS[kind]
    name = model or str(defaults["model"])
    spec = models.resolve_model(name, weights)
    n_positions, vocab_size = _model_facts(spec)
    lens = seq_lens or _ints(defaults["seq_lens"])
    too_long = [s for s in lens if s > n_positions]
    if too_long:
        raise SettingsError(
            f"--gpt2-seq-lens {','.join(map(str, too_long))}: model {name!r} has "
            f"n_positions={n_positions}; use lengths <= {n_positions}"
        )
    if dataset not in ("embedded", "wikitext-2"):
        data.text_files(dataset)  # raises DataError naming the path when it does not exist
    grid_batches = batch_sizes or _ints(defaults["batch_sizes"])
    try:  # phase defaults apply where the user left batch sizes / lengths unset
        gen = generation.resolve_options(
            kind, prompt_lens, new_tokens, batch_sizes, grid_batches, n_positions
        )
        kd = distill.resolve_options(
            kind, weights, teacher, student, kd_temperature, kd_alpha,
            batch_sizes, seq_lens, (grid_batches, lens),
        )  # fmt: skip
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Settings(
        device=dev,
        model=name,
        weights="pretrained" if spec.pretrained else "random",
        dataset=dataset,
        batch_sizes=grid_batches,
        seq_lens=lens,
        optimizations=optimizations or parse_optimizations(str(defaults["optimizations"])),
        optimizations_explicit=optimizations is not None,
        rounds=rounds or int(str(defaults["rounds"])),
        warmup=int(str(defaults["warmup"])) if warmup is None else warmup,
        round_budget=float(str(defaults["round_budget"])) if round_budget is None else round_budget,
        min_rounds=min_rounds or int(str(defaults["min_rounds"])),
        n_positions=n_positions,
        generate=gen,
        distill=kd,
        peak_tflops=peak_tflops,
        control=control,
        tokenizer=data.choose_tokenizer(tokenizer, spec, vocab_size),
    )


def _ints(value: object) -> tuple[int, ...]:
    assert isinstance(value, tuple)
    return tuple(int(v) for v in value)
