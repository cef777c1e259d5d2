"""Step closures: one call = one unit of measured work, ending in a device synchronize.

No timing here. Everything a step needs (model on the device, batch on the device, optimizer)
is prepared when the closure is made, so the timed call holds only the work itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gpt2_fixtures.bench import optimizations
from gpt2_fixtures.bench.measure import synchronize
from gpt2_fixtures.config import Optimization


@dataclass
class StepState:
    """What a step leaves behind for the record (read after timing, never inside it)."""

    last_loss: torch.Tensor | None = None

    def loss(self) -> float | None:
        return None if self.last_loss is None else float(self.last_loss.detach().float().item())


def make_optimizer(
    model: torch.nn.Module, optimization: Optimization, device: str
) -> torch.optim.Optimizer:
    """AdamW as in nanoGPT's train.py (lr 6e-4, betas 0.9/0.95, weight decay 0.1)."""
    kwargs: dict[str, Any] = {"lr": 6e-4, "betas": (0.9, 0.95), "weight_decay": 0.1}
    if optimization.fused_adamw:
        kwargs["fused"] = True
    return torch.optim.AdamW(model.parameters(), **kwargs)


def train_step(
    model: torch.nn.Module, batch: torch.Tensor, optimization: Optimization, device: str
) -> tuple[Callable[[], None], StepState]:
    """Forward + backward + AdamW step on ``batch`` (labels = inputs, shifted by the model)."""
    optimizer = make_optimizer(model, optimization, device)
    scaler = optimizations.grad_scaler(optimization, device, "train")
    state = StepState()

    def step() -> None:
        with optimizations.autocast(optimization, device, "train"):
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.last_loss = loss.detach()
        synchronize(device)

    return step, state


def infer_step(
    model: torch.nn.Module, batch: torch.Tensor, optimization: Optimization, device: str
) -> tuple[Callable[[], None], StepState]:
    """One forward pass over the full batch under ``torch.inference_mode`` (no KV cache)."""
    state = StepState()

    def step() -> None:
        with torch.inference_mode():
            model(input_ids=batch, use_cache=False)
        synchronize(device)

    return step, state
