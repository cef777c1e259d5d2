"""Optimization recipes applied to a built model: each a small function, model -> model.

``skip_reason`` decides, before any model is built, whether the device can run a recipe; the
benchmark then reports a skip with that reason instead of a crash or a meaningless number.
"""

from __future__ import annotations

import importlib.util
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from gpt2_fixtures.config import Recipe

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def skip_reason(recipe: Recipe, device: str, phase: str, explicit: bool = False) -> str | None:
    """Why ``recipe`` cannot run on ``device`` (``None`` when it can).

    ``explicit`` is True when the user named the recipe: half precision on a CPU then runs
    (slowly) instead of being skipped.
    """
    rid = recipe.id
    if recipe.attention == "flash2":
        if not is_cuda(device) or importlib.util.find_spec("flash_attn") is None:
            missing = [] if is_cuda(device) else ["CUDA"]
            if importlib.util.find_spec("flash_attn") is None:
                missing.append("the flash-attn package (pip install flash-attn)")
            return f"{rid}: flash_attention_2 needs {' and '.join(missing)}; this run: {device}"
        if recipe.precision == "fp32":
            return f"{rid}: flash_attention_2 runs in fp16 or bf16 only"
    if recipe.precision == "bf16" and is_cuda(device) and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{rid}: bf16 is not supported on {name} (compute capability < 8.0); use fp16"
    if recipe.precision != "fp32" and not is_cuda(device) and not explicit:
        return (
            f"{rid}: {recipe.precision} on a CPU runs 20-150x slower than fp32 and is left out "
            "of the default CPU grid; name it in --gpt2-optimizations to run it anyway"
        )
    return None


def autocast(recipe: Recipe, device: str, phase: str) -> AbstractContextManager[Any]:
    """Mixed precision for training: fp32 master weights, fp16/bf16 matmuls.

    Pure fp16 weights break AdamW (its eps of 1e-8 underflows to 0 in fp16, so rows with zero
    gradient become 0/0 = NaN); autocast with fp32 weights is what fp16/bf16 training means in
    practice (torch.amp, the Hugging Face Trainer's --fp16/--bf16).
    """
    if phase in ("train", "distill") and recipe.precision != "fp32":
        return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[recipe.precision])
    return nullcontext()


def weights_dtype(recipe: Recipe, phase: str) -> torch.dtype:
    """Training keeps fp32 master weights; inference casts them (``model.half()`` for fp16)."""
    if phase in ("train", "distill"):
        return torch.float32
    return DTYPES[recipe.precision]


def apply(model: torch.nn.Module, recipe: Recipe, device: str, phase: str) -> torch.nn.Module:
    """Cast, move and set the mode; the attention implementation was chosen at build time."""
    dtype = weights_dtype(recipe, phase)
    if dtype == torch.float16:
        model = model.half()  # the seed's "quantization", kept as its spelling
    elif dtype != torch.float32:
        model = model.to(dtype)
    model = model.to(device)
    model.train(phase in ("train", "distill"))
    return model


def grad_scaler(recipe: Recipe, device: str, phase: str) -> torch.amp.GradScaler | None:
    """fp16 training needs loss scaling (gradients underflow in fp16); bf16 does not."""
    if phase in ("train", "distill") and recipe.precision == "fp16":
        return torch.amp.GradScaler(torch.device(device).type)
    return None
