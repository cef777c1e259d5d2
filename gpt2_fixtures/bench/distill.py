"""Knowledge-distillation phase: the KD loss, the distillation step and its options.

Loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", section 2;
DistilBERT, Sanh et al. 2019, section 2, and its training code ``distiller.py``)::

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * LM loss

KL is summed over the vocabulary and averaged over the valid token positions (DistilBERT's
``KLDivLoss(reduction="batchmean")`` over the selected positions). The gradients of the soft
term scale as 1/T^2, so multiplying by T^2 keeps its share of the gradient independent of T
(Hinton et al., end of section 2). The LM loss is the usual next-token cross-entropy.

One step (what a pytest-benchmark round times): the teacher forward under ``torch.no_grad``,
then the student forward, the loss, backward and an AdamW step, ending in a device synchronize.
``teacher_share`` is the teacher forward's fraction of the step, from device timestamps taken
at the start, after the teacher forward and at the end (``generation.DeviceClock``: CUDA events
on a GPU, so the host never waits in the middle of the step; ``perf_counter`` on a CPU).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from gpt2_fixtures.bench import models, optimizations
from gpt2_fixtures.bench.errors import parse_finite
from gpt2_fixtures.bench.generation import DeviceClock
from gpt2_fixtures.bench.measure import mean_std, synchronize
from gpt2_fixtures.bench.steps import make_optimizer
from gpt2_fixtures.config import PRESETS, Case, Optimization

# Defaults per device type: distilgpt2 was distilled from gpt2 (Sanh et al. 2019); on a CPU the
# tiny student learns from the slightly bigger tiny-teacher preset, with a small grid (batch 2,
# length 64) so the phase takes seconds on 2 cores unless --gpt2-batch-sizes/--gpt2-seq-lens
# say otherwise.
DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"teacher": "tiny-teacher", "student": "tiny", "batch_sizes": (2,), "seq_lens": (64,)},
    "cuda": {"teacher": "gpt2", "student": "distilgpt2", "batch_sizes": None, "seq_lens": None},
}
# The defaults of DistilBERT's training script (transformers, examples/research_projects/
# distillation/train.py: --temperature 2.0, --alpha_ce 0.5); alpha 0.5 weighs soft and hard
# targets equally.
DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5


# ---------------------------------------------------------------------------------------------
# Options


def parse_temperature(text: str) -> float:
    value = parse_finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"temperature {text} must be a finite number > 0")
    return value


def parse_alpha(text: str) -> float:
    value = parse_finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"alpha {text} must be in [0, 1] (the KD term's share of the loss)"
        )
    return value


@dataclass(frozen=True)
class DistillOptions:
    """Teacher, student, loss mix and the phase's grid, device defaults filled in."""

    teacher: models.ModelSpec
    student: models.ModelSpec
    temperature: float
    alpha: float
    batch_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.temperature > 0 or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"temperature must be > 0 and alpha in [0, 1]: {self}")

    def header(self) -> str:
        return (
            f"distill: teacher={self.teacher.name} student={self.student.name} "
            f"T={self.temperature:g} alpha={self.alpha:g} "
            f"batch_sizes={','.join(map(str, self.batch_sizes))} "
            f"seq_lens={','.join(map(str, self.seq_lens))}"
        )


def resolve_options(
    device_type: str,
    weights: str,
    teacher: str | None,
    student: str | None,
    temperature: float | None,
    alpha: float | None,
    batch_sizes: tuple[int, ...] | None,
    seq_lens: tuple[int, ...] | None,
    grid: tuple[tuple[int, ...], tuple[int, ...]],
) -> DistillOptions:
    """``batch_sizes``/``seq_lens`` are the user's values (None when not given); ``grid`` is the
    run's resolved (batch sizes, lengths), used on CUDA when the user gave none.

    Presets are checked here (vocabulary, positions); a hub id or directory at build time.
    """
    defaults = DEFAULTS["cuda" if device_type == "cuda" else "cpu"]
    t_spec = pair_model(teacher or defaults["teacher"], weights)
    s_spec = pair_model(student or defaults["student"], weights)
    lens = tuple(seq_lens or defaults["seq_lens"] or grid[1])
    presets = [PRESETS[s.name] for s in (t_spec, s_spec) if s.source == "preset"]
    if len(presets) == 2 and presets[0].vocab_size != presets[1].vocab_size:
        raise ValueError(
            f"teacher {t_spec.name} and student {s_spec.name} have different vocabularies "
            f"({presets[0].vocab_size} vs {presets[1].vocab_size}); distillation needs one "
            "tokenizer"
        )
    for p in presets:
        if max(lens) > p.n_positions:
            raise ValueError(
                f"sequence length {max(lens)} > {p.name}'s n_positions={p.n_positions}"
            )
    return DistillOptions(
        teacher=t_spec,
        student=s_spec,
        temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
        alpha=DEFAULT_ALPHA if alpha is None else alpha,
        batch_sizes=tuple(batch_sizes or defaults["batch_sizes"] or grid[0]),
        seq_lens=lens,
    )


def pair_model(name: str, weights: str) -> models.ModelSpec:
    """A teacher or student: a preset is built from its config, whatever ``--gpt2-weights`` says
    about the model under test (``tiny`` is no hub checkpoint); a hub id or directory follows
    it."""
    return models.resolve_model(name, "auto" if name in PRESETS else weights)


def grid(chosen: Sequence[Optimization], opts: DistillOptions) -> list[Case]:
    """Optimization-major, like the other phases: ids ``<optimization>-b<batch>-s<len>``."""
    return [
        Case("distill", r, b, s) for r in chosen for b in opts.batch_sizes for s in opts.seq_lens
    ]


def check_pair(teacher_config: Any, student_config: Any, teacher: str, student: str) -> None:
    """Teacher and student must share the vocabulary: the KL compares distributions over it."""
    tv, sv = int(teacher_config.vocab_size), int(student_config.vocab_size)
    if tv != sv:
        raise ValueError(
            f"teacher {teacher} (vocab {tv}) and student {student} (vocab {sv}) do not share a "
            "tokenizer; distillation needs the same vocabulary"
        )


# ---------------------------------------------------------------------------------------------
# Loss


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over valid positions.

    Logits are ``(..., vocab)``; ``valid`` (same leading shape, bool or 0/1) marks the
    positions that count, e.g. the attention mask (padding excluded). Computed in float32
    whatever the logits' dtype (softmax over 50k entries in half precision loses the tail).
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    per_position = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(-1)
    if valid is None:
        kl = per_position.mean()
    else:
        weight = valid.to(per_position.dtype)
        kl = (per_position * weight).sum() / weight.sum().clamp_min(1.0)
    return kl * t * t


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Labels for the LM loss: the inputs (the model shifts them), padding ignored (-100)."""
    if attention_mask is None:
        return input_ids
    return input_ids.masked_fill(attention_mask == 0, -100)


@dataclass(frozen=True)
class LossParts:
    loss: torch.Tensor
    kd: torch.Tensor  # T^2 * KL, before the alpha weight
    lm: torch.Tensor | None  # None when alpha == 1 (not computed)


def distillation_loss(
    student: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    teacher_logits: torch.Tensor,
    temperature: float,
    alpha: float,
) -> LossParts:
    """Student forward and ``alpha * kd + (1 - alpha) * lm``; padding (mask 0) counts nowhere."""
    # With alpha == 1 the LM loss is not part of the objective: do not pay for it.
    labels = lm_labels(input_ids, attention_mask) if alpha < 1 else None
    out = student(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False
    )
    kd = kd_loss(out.logits, teacher_logits, temperature, attention_mask)
    loss = alpha * kd if out.loss is None else alpha * kd + (1 - alpha) * out.loss
    return LossParts(loss, kd, out.loss)


# ---------------------------------------------------------------------------------------------
# The step


@dataclass
class DistillState:
    """What the steps leave behind (tensors; read after timing, never inside it)."""

    last_loss: torch.Tensor | None = None
    last_kd: torch.Tensor | None = None
    last_lm: torch.Tensor | None = None
    stamps: list[tuple[Any, Any, Any]] = field(default_factory=list)

    def loss(self) -> float | None:
        return _item(self.last_loss)

    def kd_loss(self) -> float | None:
        return _item(self.last_kd)

    def lm_loss(self) -> float | None:
        return _item(self.last_lm)


def _item(value: torch.Tensor | None) -> float | None:
    return None if value is None else float(value.detach().float().item())


class Distiller:
    """Teacher + student + optimizer: ``step(batch)`` is one distillation step."""

    def __init__(
        self,
        student: torch.nn.Module,
        teacher: torch.nn.Module,
        optimization: Optimization,
        device: str,
        temperature: float = DEFAULT_TEMPERATURE,
        alpha: float = DEFAULT_ALPHA,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.student, self.teacher = student, teacher
        self.optimization, self.device = optimization, device
        self.temperature, self.alpha = temperature, alpha
        self.optimizer = optimizer or make_optimizer(student, optimization, device)
        self.scaler = optimizations.grad_scaler(optimization, device, "distill")
        self.clock = DeviceClock(device)
        self.state = DistillState()

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        start = self.clock.stamp()
        with torch.no_grad():
            teacher_logits = self.teacher(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).logits
        after_teacher = self.clock.stamp()
        with optimizations.autocast(self.optimization, self.device, "distill"):
            parts = distillation_loss(
                self.student,
                input_ids,
                attention_mask,
                teacher_logits,
                self.temperature,
                self.alpha,
            )
        loss = parts.loss
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.stamps.append((start, after_teacher, self.clock.stamp()))
        self.state.last_loss, self.state.last_kd = loss.detach(), parts.kd.detach()
        self.state.last_lm = None if parts.lm is None else parts.lm.detach()
        synchronize(self.device)

    def teacher_shares(self) -> list[float]:
        """Teacher forward time / step time, one per call of the step (``Measured.timed_of``
        picks the timed rounds' among them)."""
        return [
            teacher_share(self.clock.seconds(a, b), self.clock.seconds(a, c))
            for a, b, c in self.state.stamps
        ]


def teacher_share(teacher_s: float, step_s: float) -> float:
    if not 0 <= teacher_s <= step_s or step_s <= 0:
        raise ValueError(f"teacher time {teacher_s} s must lie within the step's {step_s} s")
    return teacher_s / step_s


def distill_step(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: torch.Tensor,
    optimization: Optimization,
    device: str,
    temperature: float,
    alpha: float,
) -> tuple[Callable[[], None], Distiller]:
    """The benchmark closure: one distillation step on ``batch`` (packed blocks: no padding)."""
    distiller = Distiller(student, teacher, optimization, device, temperature, alpha)
    return (lambda: distiller.step(batch)), distiller


def share_metrics(shares: Sequence[float]) -> dict[str, float | None]:
    mean, std = mean_std(shares)
    return {"teacher_share": mean, "teacher_share_std": std}
