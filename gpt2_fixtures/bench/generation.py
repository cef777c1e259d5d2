"""Generation phase: greedy ``generate`` with the KV cache, per-token timestamps, TTFT and TPOT.

How the latencies are measured (docs/phases.md says the same for users):

* The timed call (one pytest-benchmark round) is one full ``model.generate`` of exactly
  ``new_tokens`` tokens, ending in a device synchronize: its time is the end-to-end latency.
* Inside that call a logits processor (``TokenClock``) takes a timestamp each time the model
  has produced the logits of the next token, i.e. after the prefill forward for token 1 and
  after each one-token decode forward for tokens 2..n. On a CPU the timestamp is
  ``time.perf_counter()`` (CPU ops are synchronous: when the processor runs, the forward is
  done). On CUDA it is a ``torch.cuda.Event`` recorded into the stream, so the time is taken on
  the device's own timeline when the forward's kernels finish, and the host never waits for it:
  adding a ``synchronize`` per token would stall the host's kernel queueing and slow the very
  thing measured. Events are converted to seconds after the round, outside the timed work.
* ``ttft`` (time to first token) = first timestamp - start of the call: input preparation and
  the prefill forward. ``tpot`` (time per output token) = (last - first timestamp) / (n - 1):
  the mean decode step, from the first token's logits to the last token's logits.
  ``decode_tokens_per_s`` = batch size / tpot (tokens per second over the batch while decoding).
  What follows the last logits (one argmax, returning the tensor) belongs to no token; it is
  inside the end-to-end time only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gpt2_fixtures.bench.measure import mean_std, synchronize
from gpt2_fixtures.config import Case, Optimization

# Defaults per device type: 128 prompt tokens and 128 new ones on a GPU; the CPU default keeps
# the phase to seconds on 2 cores with the tiny preset (batch 1 only, unless --gpt2-batch-sizes
# says otherwise).
DEFAULTS: dict[str, dict[str, tuple[int, ...] | None]] = {
    "cpu": {"prompt_lens": (32,), "new_tokens": (32,), "batch_sizes": (1,)},
    "cuda": {"prompt_lens": (128,), "new_tokens": (128,), "batch_sizes": None},
}


class GenerationError(AssertionError):
    """Generation did not produce exactly the requested tokens."""


# ---------------------------------------------------------------------------------------------
# Options and grid


@dataclass(frozen=True)
class GenerateOptions:
    """What the generation phase sweeps, device defaults filled in."""

    prompt_lens: tuple[int, ...]
    new_tokens: tuple[int, ...]
    batch_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (self.prompt_lens and self.new_tokens and self.batch_sizes):
            raise ValueError(f"empty generation grid: {self}")

    def header(self) -> str:
        return (
            f"generate: prompt_lens={_csv(self.prompt_lens)} new_tokens={_csv(self.new_tokens)} "
            f"batch_sizes={_csv(self.batch_sizes)}"
        )


def _csv(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def resolve_options(
    device_type: str,
    prompt_lens: tuple[int, ...] | None,
    new_tokens: tuple[int, ...] | None,
    batch_sizes: tuple[int, ...] | None,
    grid_batch_sizes: tuple[int, ...],
    n_positions: int,
) -> GenerateOptions:
    """Fill the defaults; ``batch_sizes`` is the user's --gpt2-batch-sizes (None if not given).

    Raises ``ValueError`` when a prompt plus its new tokens exceeds the model's positions.
    """
    defaults = DEFAULTS["cuda" if device_type == "cuda" else "cpu"]
    prompts = prompt_lens or defaults["prompt_lens"]
    news = new_tokens or defaults["new_tokens"]
    batches = batch_sizes or defaults["batch_sizes"] or grid_batch_sizes
    assert prompts is not None and news is not None
    longest = max(prompts) + max(news)
    if longest > n_positions:
        raise ValueError(
            f"--gpt2-prompt-lens {max(prompts)} + --gpt2-new-tokens {max(news)} = {longest} "
            f"tokens exceeds the model's n_positions={n_positions}"
        )
    return GenerateOptions(tuple(prompts), tuple(news), tuple(batches))


def grid(optimizations: Sequence[Optimization], opts: GenerateOptions) -> list[Case]:
    """Optimization-major cases; ``seq_len`` is the prompt length and the id ends in ``-n<new>``.

    Ids look like ``sdpa-fp32-b1-s32-n32``: the usual ``<optimization>-b<batch>-s<len>`` with
    the new-token count as a tail, so tools that parse ids keep working.
    """
    return [
        Case("generate", r, b, p, extra=(("n", n),))
        for r in optimizations
        for b in opts.batch_sizes
        for p in opts.prompt_lens
        for n in opts.new_tokens
    ]


def new_tokens_of(case: Case) -> int:
    value = dict(case.extra).get("n")
    if not isinstance(value, int):
        raise ValueError(f"{case.id}: a generate case needs its new-token count ('n' in extra)")
    return value


# ---------------------------------------------------------------------------------------------
# Device timestamps


class DeviceClock:
    """Timestamps on the device's timeline, never waiting for the device.

    CPU: ``perf_counter`` (PyTorch CPU ops return when done). CUDA: an event recorded into the
    device's current stream (where the model's kernels go); ``seconds`` converts a pair once
    both have completed (after a synchronize).
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.device = torch.device(device)

    def stamp(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def seconds(self, start: Any, end: Any) -> float:
        if not self.cuda:
            return float(end - start)
        return float(start.elapsed_time(end)) / 1e3  # elapsed_time is in milliseconds


class TokenClock:
    """Records a device timestamp per generated token; as a logits processor it changes nothing.

    ``generate`` calls its logits processors once per token (after the built-in ones, such as
    the min-new-tokens EOS mask), with that token's logits: a plain callable is enough there.

    ``start()`` opens a round, every ``__call__`` (once per token, after that token's logits
    exist) adds a stamp, ``rounds_s()`` converts all rounds to seconds from each round's start.
    """

    def __init__(self, clock: DeviceClock) -> None:
        self.clock = clock
        self._rounds: list[list[Any]] = []

    def start(self) -> None:
        self._rounds.append([self.clock.stamp()])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._rounds[-1].append(self.clock.stamp())
        return scores

    def rounds_s(self) -> list[list[float]]:
        """Per round: seconds from the call's start to each token's logits."""
        return [[self.clock.seconds(r[0], s) for s in r[1:]] for r in self._rounds]


# ---------------------------------------------------------------------------------------------
# The step


@dataclass
class GenerationState:
    """What the rounds leave behind: token counts and per-token timestamps (read after timing)."""

    prompt_len: int
    new_tokens: int
    clock: TokenClock
    pad_token_id: int = -1
    generated: list[int] = field(default_factory=list)
    last_new: torch.Tensor | None = None  # the last call's new tokens, (batch, new_tokens)

    def check_counts(self) -> None:
        """Every call produced exactly ``new_tokens`` tokens, each with one timestamp."""
        stamps = [len(r) for r in self.clock.rounds_s()]
        wrong = [g for g in self.generated if g != self.new_tokens]
        wrong += [n for n in stamps if n != self.new_tokens]
        if wrong or not self.generated:
            raise GenerationError(
                f"asked for exactly {self.new_tokens} new tokens per call; generated "
                f"{self.generated}, timestamps per call {stamps}"
            )
        # A row that stopped early is padded (pad = EOS) up to the longest row: none may be.
        if self.last_new is not None and bool((self.last_new == self.pad_token_id).any()):
            rows = (self.last_new == self.pad_token_id).any(dim=1).nonzero().flatten().tolist()
            raise GenerationError(f"rows {rows} hold the EOS/pad token {self.pad_token_id}")


def generate_kwargs(
    batch: torch.Tensor, new_tokens: int, pad_token_id: int, processor: Any
) -> dict[str, Any]:
    """Greedy decoding with the KV cache and exactly ``new_tokens`` tokens.

    ``min_new_tokens == max_new_tokens`` masks EOS until the length is reached, so no sequence
    stops early; every prompt token is real (packed blocks), hence an all-ones attention mask.
    """
    return {
        "attention_mask": torch.ones_like(batch),
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "pad_token_id": pad_token_id,
        "logits_processor": processor,
    }


def compile_kwargs(optimization: Optimization, device: str) -> dict[str, Any]:
    """For a compile optimization: a static KV cache, which makes ``generate`` compile the model's
    forward itself (transformers' ``_valid_auto_compile_criteria``; its default CompileConfig,
    mode reduce-overhead, on CUDA; inductor's default mode on a CPU, where transformers compiles
    only when ``_compile_all_devices`` is set)."""
    if not optimization.compile:
        return {}
    from transformers import CompileConfig

    config = CompileConfig() if device.startswith("cuda") else CompileConfig(mode="default")
    config._compile_all_devices = True  # type: ignore[assignment]  # a flag typed None
    return {"cache_implementation": "static", "compile_config": config}


def generate_step(
    model: Any, batch: torch.Tensor, optimization: Optimization, device: str, new_tokens: int
) -> tuple[Callable[[], None], GenerationState]:
    """One call = one greedy ``generate`` of ``new_tokens`` tokens for the whole batch.

    Precision comes from the weights (cast by ``optimizations.apply``), so ``optimization`` is only
    part of the common step signature.
    """
    from transformers import LogitsProcessorList

    clock = TokenClock(DeviceClock(device))
    pad = model.generation_config.eos_token_id
    pad = int(pad[0] if isinstance(pad, list) else (pad if pad is not None else 0))
    state = GenerationState(int(batch.shape[1]), new_tokens, clock, pad)
    kwargs = generate_kwargs(batch, new_tokens, pad, LogitsProcessorList([clock]))
    kwargs |= compile_kwargs(optimization, device)
    # torch.compile(model) compiles only the module's __call__; generate() runs on the original
    # module, which compiles its own forward when asked to (compile_kwargs).
    generate = getattr(model, "_orig_mod", model).generate

    def step() -> None:
        clock.start()
        with torch.inference_mode():
            out = generate(batch, **kwargs)
        synchronize(device)
        state.generated.append(int(out.shape[1]) - state.prompt_len)
        state.last_new = out[:, state.prompt_len :]

    return step, state


# ---------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class TokenTimes:
    """One round: seconds from the start of the call to each token's logits."""

    token_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.token_s:
            raise ValueError("a round without any generated token")
        if any(b < a for a, b in zip(self.token_s, self.token_s[1:], strict=False)):
            raise ValueError(f"token timestamps go backwards: {self.token_s}")

    @property
    def ttft_s(self) -> float:
        return self.token_s[0]

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first; None when only one token was made."""
        n = len(self.token_s)
        return None if n < 2 else (self.token_s[-1] - self.token_s[0]) / (n - 1)


def generation_metrics(
    rounds_s: Sequence[Sequence[float]], batch_size: int, prompt_len: int, new_tokens: int
) -> dict[str, Any]:
    """TTFT, TPOT and decode throughput over the given rounds (the timed ones: see
    ``Measured.timed_of``): mean, sample std, and ``ttft_round_ms``/``tpot_round_ms`` with one
    entry per round, in the rounds' order (``tpot_round_ms`` is None with one new token)."""
    times = [TokenTimes(tuple(r)) for r in rounds_s]
    ttft_round = [t.ttft_s * 1e3 for t in times]
    tpots = [t.tpot_s for t in times if t.tpot_s is not None]
    tpot_round = [t * 1e3 for t in tpots]
    ttft, ttft_std = mean_std(ttft_round)
    tpot, tpot_std = mean_std(tpot_round)
    # A zero TPOT (clock resolution) would make the rate infinite: leave such rounds out.
    dps, dps_std = mean_std([batch_size / t for t in tpots if t > 0])
    return {
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "ttft_ms": ttft,
        "ttft_ms_std": ttft_std,
        "ttft_round_ms": ttft_round,
        "tpot_ms": tpot,
        "tpot_ms_std": tpot_std,
        "tpot_round_ms": tpot_round if len(tpot_round) == len(times) else None,
        "decode_tokens_per_s": dps,
        "decode_tokens_per_s_std": dps_std,
    }
