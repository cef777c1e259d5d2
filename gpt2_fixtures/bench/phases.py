"""One adapter per phase: how the bench runs what ``config.PHASE_TABLE`` declares.

An adapter says which cases a phase has (its grid), which model it measures, how its step is
made, how many tokens a step counts, its FLOPs, its control workload (``twin``) and what it
records beside the common keys. Everything else looks the adapter up (``ADAPTERS[case.phase]``)
instead of comparing phase names; docs/architecture.md, "Adding a phase".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from gpt2_fixtures.bench import distill, flops, generation, models, optimizations, steps
from gpt2_fixtures.bench.measure import Measured
from gpt2_fixtures.bench.settings import Settings
from gpt2_fixtures.config import PHASE, Case

Step = tuple[Callable[[], None], Any]


class Bench(Protocol):
    """What an adapter reads from the model and data cache (``workbench.Workbench``)."""

    settings: Settings
    spec: models.ModelSpec

    @property
    def config(self) -> Any: ...

    def config_of(self, spec: models.ModelSpec) -> Any: ...

    def distill_options(self) -> distill.DistillOptions: ...

    def teacher(self, case: Case) -> torch.nn.Module: ...


class Adapter:
    """A phase over optimization x batch size x length of --gpt2-model, a forward (and backward when
    the phase trains) over the whole batch; subclasses change what differs."""

    twin = "infer"  # the control's kind (controls.TWINS)
    logit_check = False  # reduced precision compared with fp32 logits (max_logit_diff)

    def __init__(self, name: str) -> None:
        self.phase = PHASE[name]

    def grid(self, s: Settings) -> list[Case]:
        """The phase's cases, optimization-major (each model is built once)."""
        name = self.phase.name
        return [
            Case(name, r, b, t) for r in s.optimizations for b in s.batch_sizes for t in s.seq_lens
        ]

    def spec(self, bench: Bench) -> models.ModelSpec:
        """The measured model."""
        return bench.spec

    def tokens(self, case: Case) -> int:
        """Tokens per step counted in ``tokens_per_s`` (they also size the control)."""
        return case.tokens

    def step_flops(self, bench: Bench, case: Case) -> int | None:
        """FLOPs of one step (flops.py); None for a model that is not GPT-2."""
        arch = flops.architecture(bench.config)
        if arch is None:
            return None
        return flops.flops_per_step(arch, case.batch_size, case.seq_len, self.phase.trains)

    def keys(self, bench: Bench, case: Case) -> dict[str, Any]:
        """The phase's own configuration keys of ``extra_info``."""
        return {}

    def step(self, bench: Bench, case: Case, model: torch.nn.Module, batch: torch.Tensor) -> Step:
        raise NotImplementedError

    def record(self, bench: Bench, case: Case, measured: Measured, state: Any) -> dict[str, Any]:
        """What the phase records after the rounds, beside ``measured.info``."""
        return {}


class Train(Adapter):
    twin = "train"

    def step(self, bench: Bench, case: Case, model: torch.nn.Module, batch: torch.Tensor) -> Step:
        return steps.train_step(model, batch, case.optimization, bench.settings.device)

    def record(self, bench: Bench, case: Case, measured: Measured, state: Any) -> dict[str, Any]:
        return {"loss": state.loss()}


class Infer(Adapter):
    logit_check = True

    def step(self, bench: Bench, case: Case, model: torch.nn.Module, batch: torch.Tensor) -> Step:
        return steps.infer_step(model, batch, case.optimization, bench.settings.device)


class Generate(Adapter):
    """seq_len is the prompt; a step generates ``n`` new tokens per sequence with the KV cache."""

    twin = "generate"

    def grid(self, s: Settings) -> list[Case]:
        return (
            super().grid(s) if s.generate is None else generation.grid(s.optimizations, s.generate)
        )

    def tokens(self, case: Case) -> int:
        return case.batch_size * generation.new_tokens_of(case)  # generated tokens only

    def step_flops(self, bench: Bench, case: Case) -> int | None:
        arch = flops.architecture(bench.config)
        if arch is None:
            return None
        n = generation.new_tokens_of(case)
        return flops.generate_flops(arch, case.batch_size, case.seq_len, n)

    def keys(self, bench: Bench, case: Case) -> dict[str, Any]:
        return {"prompt_len": case.seq_len, "new_tokens": generation.new_tokens_of(case)}

    def step(self, bench: Bench, case: Case, model: torch.nn.Module, batch: torch.Tensor) -> Step:
        n, device = generation.new_tokens_of(case), bench.settings.device
        return generation.generate_step(model, batch, case.optimization, device, n)

    def record(self, bench: Bench, case: Case, measured: Measured, state: Any) -> dict[str, Any]:
        state.check_counts()  # exactly new_tokens per call, no early EOS stop
        rounds = measured.timed_of(state.clock.rounds_s())  # one per stats.data entry
        n = generation.new_tokens_of(case)
        return generation.generation_metrics(rounds, case.batch_size, case.seq_len, n)


class Distill(Adapter):
    """The student's training step beside a teacher's forward; the student is measured."""

    twin = "train"  # the student's training step

    def grid(self, s: Settings) -> list[Case]:
        return super().grid(s) if s.distill is None else distill.grid(s.optimizations, s.distill)

    def spec(self, bench: Bench) -> models.ModelSpec:
        return bench.distill_options().student

    def step_flops(self, bench: Bench, case: Case) -> int | None:
        opts = bench.distill_options()
        teacher = flops.architecture(bench.config_of(opts.teacher))
        student = flops.architecture(bench.config_of(opts.student))
        if teacher is None or student is None:
            return None
        return flops.distill_flops(teacher, student, case.batch_size, case.seq_len)

    def keys(self, bench: Bench, case: Case) -> dict[str, Any]:
        d = bench.distill_options()
        return {
            "model": d.student.name,
            "weights": "pretrained" if d.student.pretrained else "random",
            "teacher": d.teacher.name,
            "student": d.student.name,
            "temperature": d.temperature,
            "alpha": d.alpha,
        }

    def step(self, bench: Bench, case: Case, model: torch.nn.Module, batch: torch.Tensor) -> Step:
        opts, device = bench.distill_options(), bench.settings.device
        teacher = bench.teacher(case)
        return distill.distill_step(
            model, teacher, batch, case.optimization, device, opts.temperature, opts.alpha
        )

    def record(self, bench: Bench, case: Case, measured: Measured, state: Any) -> dict[str, Any]:
        # The timed rounds' shares, one per stats.data entry (not warmup or settled steps).
        info = distill.share_metrics(measured.timed_of(state.teacher_shares()))
        losses = state.state
        info |= {"loss": losses.loss(), "kd_loss": losses.kd_loss(), "lm_loss": losses.lm_loss()}
        return info | {"teacher_n_params": models.n_params(bench.teacher(case))}


TRAIN, INFER = Train("train"), Infer("infer")
GENERATE, DISTILL = Generate("generate"), Distill("distill")
# Every row of config.PHASE_TABLE has its adapter here (tests/test_phases.py checks it).
ADAPTERS: dict[str, Adapter] = {a.phase.name: a for a in (TRAIN, INFER, GENERATE, DISTILL)}


def grid(phase: str, s: Settings) -> list[Case]:
    return ADAPTERS[phase].grid(s)


def skip_reason(case: Case, s: Settings) -> str | None:
    """Why the case cannot run on this device (None: it runs), decided before any model."""
    return optimizations.skip_reason(
        case.optimization, s.device, case.phase, s.optimizations_explicit
    )
