"""Model presets, optimizations, benchmark cases and the option parsers that build them.

Everything here is plain data: validated at the edge (``__post_init__`` and the ``parse_*``
functions, which raise ``argparse.ArgumentTypeError`` so pytest prints one line), never deep
inside a benchmark.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Phase:
    """What a phase is, declared once (docs/architecture.md, "Adding a phase"); how it runs is
    its adapter in ``bench/phases.py``."""

    name: str  # in case ids' params and extra_info["phase"]
    marker: str  # `pytest benchmarks -m <marker>`
    benchmark: str  # the benchmark function, in benchmarks/<file>
    file: str
    trains: bool  # an optimizer step: fp32 master weights, autocast, backward FLOPs
    length: str  # what a case's seq_len is
    axis: str = "sequence length (tokens)"  # the report's axis for seq_len
    rate: str = "throughput (tokens/s)"  # the report's axis for tokens_per_s
    per_token_latency: bool = False  # records TTFT/TPOT, drawn as a latency plot

    @classmethod
    def of(cls, name: str) -> Phase:
        """The row of ``name``; a phase this version does not know (an older or newer result
        file) gets the defaults, so a report still draws it."""
        return PHASE.get(name) or cls(name, name, f"test_{name}", "", False, "tokens per sequence")


PHASE_TABLE = (
    Phase("train", "train", "test_train", "test_training.py", True, "tokens per sequence"),
    Phase("infer", "inference", "test_infer", "test_inference.py", False, "tokens per sequence"),
    Phase("generate", "generation", "test_generate", "test_generation.py", False,
          "prompt tokens (new tokens are the id's n)", "prompt length (tokens)",
          rate="throughput (generated tokens/s)", per_token_latency=True),
    Phase("distill", "distillation", "test_distill", "test_distillation.py", True,
          "tokens per sequence"),
)  # fmt: skip
PHASE = {p.name: p for p in PHASE_TABLE}
PHASES = tuple(PHASE)

# Real GPT-2 shapes (Radford et al. 2019, table 2; the Hugging Face configs of the same ids).
# All share the 50,257-token byte-level BPE vocabulary and 1,024 positions.
GPT2_VOCAB_SIZE = 50257
GPT2_N_POSITIONS = 1024


@dataclass(frozen=True)
class Preset:
    """A GPT-2 architecture: enough to build the model offline with random weights."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int = GPT2_N_POSITIONS
    vocab_size: int = GPT2_VOCAB_SIZE

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"preset {self.name}: n_embd {self.n_embd} is not a multiple of "
                f"n_head {self.n_head}"
            )


PRESETS: dict[str, Preset] = {
    # tiny keeps the real vocabulary (the tokenizer is GPT-2's) and real positions, so every data
    # path is exercised; 2 layers of width 128 make a CPU training step take tens of milliseconds.
    "tiny": Preset("tiny", n_layer=2, n_head=2, n_embd=128),
    # The CPU distillation teacher of tiny: twice the depth and width (about 2.4x the parameters,
    # most of them the shared embedding), as gpt2 is to distilgpt2 in depth.
    "tiny-teacher": Preset("tiny-teacher", n_layer=4, n_head=4, n_embd=256),
    "distilgpt2": Preset("distilgpt2", n_layer=6, n_head=12, n_embd=768),
    "gpt2": Preset("gpt2", n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": Preset("gpt2-medium", n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": Preset("gpt2-large", n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": Preset("gpt2-xl", n_layer=48, n_head=25, n_embd=1600),
}

ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flash2": "flash_attention_2"}
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Optimization flags: a token in the optimization id, the attribute it sets.
FLAGS = {"compile": "compile", "padvocab": "pad_vocab", "fusedadam": "fused_adamw"}


@dataclass(frozen=True)
class Optimization:
    """One optimization: attention x precision x quantization x compile x step tricks.

    ``id`` is the stable name used in benchmark ids and ``extra_info["optimization"]``:
    ``<attention>-<fp32|fp16|bf16|int8>[-compile][-padvocab][-fusedadam]``.
    """

    attention: str = "sdpa"
    precision: str = "fp32"
    int8: bool = False
    compile: bool = False
    pad_vocab: bool = False
    fused_adamw: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION:
            raise ValueError(f"attention {self.attention!r}: expected one of {list(ATTENTION)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {list(PRECISIONS)}")
        if self.int8 and self.precision != "fp32":
            raise ValueError("int8 quantizes fp32 weights; it does not combine with fp16/bf16")

    @property
    def id(self) -> str:
        parts = [self.attention, "int8" if self.int8 else self.precision]
        parts += [token for token, attr in FLAGS.items() if getattr(self, attr)]
        return "-".join(parts)

    @property
    def attn_implementation(self) -> str:
        return ATTENTION[self.attention]

    @property
    def dtype(self) -> str:
        """The compute dtype name recorded in ``extra_info["dtype"]``."""
        return "int8" if self.int8 else PRECISIONS[self.precision]


def parse_optimization(text: str) -> Optimization:
    """Parse ``eager``, ``sdpa-bf16``, ``flash2``, ``int8``, ``sdpa-compile`` ... (an Optimization).

    Missing parts take defaults: attention ``sdpa`` (``eager`` only when named), precision
    ``fp32``, except flash2 which needs half precision and defaults to ``bf16``.
    """
    tokens = [t for t in text.strip().lower().split("-") if t]
    if not tokens:
        raise argparse.ArgumentTypeError("empty optimization")
    attention, precision, kwargs = None, None, {}
    for token in tokens:
        if token in ATTENTION and attention is None:
            attention = token
        elif token in PRECISIONS and precision is None:
            precision = token
        elif token == "int8" and "int8" not in kwargs:
            kwargs["int8"] = True
        elif token in FLAGS and FLAGS[token] not in kwargs:
            kwargs[FLAGS[token]] = True
        else:
            accepted = [*ATTENTION, *PRECISIONS, "int8", *FLAGS]
            raise argparse.ArgumentTypeError(
                f"unknown optimization {text!r}: token {token!r} is not one of {accepted} "
                "(or is repeated); examples: eager-fp32, sdpa-bf16, flash2-bf16, int8, sdpa-compile"
            )
    attention = attention or "sdpa"
    precision = precision or ("bf16" if attention == "flash2" else "fp32")
    try:
        return Optimization(attention=attention, precision=precision, **kwargs)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"optimization {text!r}: {exc}") from None


def parse_optimizations(text: str) -> tuple[Optimization, ...]:
    optimizations = tuple(
        dict.fromkeys(parse_optimization(t) for t in text.split(",") if t.strip())
    )
    if not optimizations:
        raise argparse.ArgumentTypeError("no optimization given")
    return optimizations


# ---------------------------------------------------------------------------------------------
# Number parsers for options: each raises argparse.ArgumentTypeError with one line, so argparse
# (pytest's parser too) prints "--option: reason" and exits 2 (pytest: usage error 4).


def parse_positive_ints(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)``; every value must be a whole number >= 1."""
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a whole number; expected a comma-separated list such as 1,8"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} must be >= 1")
        values.append(value)
    return tuple(dict.fromkeys(values))


def parse_positive_int(text: str) -> int:
    values = parse_positive_ints(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a single whole number >= 1")
    return values[0]


def parse_non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def parse_finite_float(text: str) -> float:
    """A finite number: ``nan`` and ``inf`` are refused (they pass every comparison or none)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
    return value


def parse_positive_float(text: str) -> float:
    """A finite number > 0 (a time, a rate, a peak)."""
    value = parse_finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def parse_non_negative_float(text: str) -> float:
    value = parse_finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def parse_fraction(text: str) -> float:
    """A share in (0, 1]: ``0.5`` is half; 0 would be nothing at all."""
    value = parse_finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


def parse_open_fraction(text: str) -> float:
    """A probability strictly between 0 and 1 (a significance level)."""
    value = parse_finite_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1)")
    return value


def parse_unit_interval(text: str) -> float:
    """A weight in [0, 1], both ends included (e.g. a loss mix)."""
    value = parse_finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 1]")
    return value


def parse_percentage(text: str) -> float:
    """``"25%"`` -> ``0.25``; the % sign is required so that 25 and 0.25 are never confused."""
    number, sign, rest = text.strip().partition("%")
    if not sign or rest:
        raise argparse.ArgumentTypeError(f"expected a percentage such as 25%, got {text!r}")
    try:
        value = parse_positive_float(number)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite percentage > 0%") from None
    return value / 100


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse_device(text: str) -> str:
    value = text.strip().lower()
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: expected auto, cpu, cuda or cuda:N"
        )
    return value


def parse_weights(text: str) -> str:
    value = text.strip().lower()
    if value not in ("auto", "random", "pretrained"):
        raise argparse.ArgumentTypeError(
            f"unknown weights {text!r}: expected random, pretrained or auto"
        )
    return value


@dataclass(frozen=True)
class Case:
    """One benchmark case: what a benchmark function measures once."""

    phase: str
    optimization: Optimization
    batch_size: int
    seq_len: int
    extra: tuple[tuple[str, int | str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase {self.phase!r}: expected one of {list(PHASES)}")
        if self.batch_size < 1 or self.seq_len < 1:
            raise ValueError(f"batch size and sequence length must be >= 1: {self}")

    @property
    def id(self) -> str:
        """Stable id, e.g. ``sdpa-bf16-b8-s512``: baselines match on it."""
        tail = "".join(f"-{key}{value}" for key, value in self.extra)
        return f"{self.optimization.id}-b{self.batch_size}-s{self.seq_len}{tail}"

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len

    def params(self) -> dict[str, int | str]:
        """The plain fields, for the result JSON's ``params`` (phase, optimization, batch_size,
        seq_len and the phase's extra axes, e.g. ``n`` new tokens of a generate case)."""
        fields: dict[str, int | str] = {"phase": self.phase, "optimization": self.optimization.id}
        return fields | {"batch_size": self.batch_size, "seq_len": self.seq_len} | dict(self.extra)


@dataclass
class ModelConfig:
    """The original script's configuration of one case, kept so its users find their way.

    ``use_flash_attention`` selects FlashAttention-2 through transformers'
    ``attn_implementation``; ``use_quantization`` was the seed's naive fp16 cast
    (``model.half()``).
    """

    model_name: str = "gpt2"
    batch_size: int = 8
    max_length: int = 128
    use_flash_attention: bool = False
    use_quantization: bool = False

    def optimization(self) -> Optimization:
        attention = "flash2" if self.use_flash_attention else "eager"
        if self.use_quantization:
            precision = "fp16"
        else:
            precision = "bf16" if self.use_flash_attention else "fp32"
        return Optimization(attention=attention, precision=precision)

    def case(self, phase: str = "train") -> Case:
        return Case(phase, self.optimization(), self.batch_size, self.max_length)
