"""Build GPT-2 models: from a preset's config with random weights (offline), or pretrained.

Random weights cost the same time and memory as pretrained weights of the same shape: the
kernels and tensor sizes are identical. Pretrained weights come from a hub id or a local
directory through ``from_pretrained``; remote code is never trusted.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt2_fixtures.bench import hub
from gpt2_fixtures.bench.errors import first_line
from gpt2_fixtures.config import PRESETS, Optimization


class ModelError(ValueError):
    """A model that cannot be used as asked; the message is one line."""


@dataclass(frozen=True)
class ModelSpec:
    """Where the model comes from: ``source`` is ``preset``, ``path`` or ``hub``."""

    name: str
    source: str
    pretrained: bool

    @property
    def load_from(self) -> str:
        return str(Path(self.name).expanduser()) if self.source == "path" else self.name


def resolve_model(name: str, weights: str = "auto") -> ModelSpec:
    """``auto`` weights: random for a preset, pretrained for a path or a hub id."""
    if Path(name).expanduser().is_dir():
        return ModelSpec(name, "path", weights != "random")
    if name in PRESETS:
        return ModelSpec(name, "preset", weights == "pretrained")
    if weights == "random":
        raise ModelError(
            f"unknown preset {name!r} with --gpt2-weights random: presets are {list(PRESETS)}; "
            "a hub id or local directory needs --gpt2-weights pretrained"
        )
    if "/" in name and (name.startswith((".", "/", "~")) or Path(name).suffix):
        raise ModelError(f"model path {name!r} does not exist")
    if not _looks_like_hub_id(name):
        raise ModelError(
            f"unknown model {name!r}: expected a preset {list(PRESETS)}, a hub id such as "
            "openai-community/gpt2, or a local directory"
        )
    return ModelSpec(name, "hub", True)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    allowed = set("-_.")
    return 1 <= len(parts) <= 2 and all(
        p and all(c.isalnum() or c in allowed for c in p) for p in parts
    )


def model_config(spec: ModelSpec) -> Any:
    """The ``GPT2Config`` (or the checkpoint's own config) without loading any weights."""
    from transformers import AutoConfig, GPT2Config

    if spec.source == "preset" and not spec.pretrained:
        p = PRESETS[spec.name]
        return GPT2Config(
            n_layer=p.n_layer,
            n_head=p.n_head,
            n_embd=p.n_embd,
            n_positions=p.n_positions,
            vocab_size=p.vocab_size,
        )
    local = spec.source == "path"
    try:
        return AutoConfig.from_pretrained(
            spec.load_from,
            local_files_only=local or hub.local_files_only(),
            trust_remote_code=False,
        )
    except (OSError, ValueError) as exc:
        if local:
            msg = f"model directory {spec.name!r} has no usable config.json: {first_line(exc)}"
            raise ModelError(msg) from None
        raise hub.explain("model", spec.name, exc) from None


def max_positions(config: Any) -> int:
    return int(getattr(config, "n_positions", None) or config.max_position_embeddings)


def build(
    spec: ModelSpec, optimization: Optimization, config: Any, seed: int = 0
) -> torch.nn.Module:
    """The model in fp32 on the CPU with the optimization's attention implementation.

    Precision, quantization and the device move are applied afterwards by
    ``optimizations.apply`` so that each step is one small function.
    """
    from transformers import AutoModelForCausalLM

    attn = optimization.attn_implementation
    if not spec.pretrained:
        torch.manual_seed(seed)  # the same random weights in every run
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    local = spec.source == "path"
    try:
        return AutoModelForCausalLM.from_pretrained(
            spec.load_from,
            attn_implementation=attn,
            dtype=torch.float32,
            local_files_only=local or hub.local_files_only(),
            trust_remote_code=False,
        )
    except OSError as exc:
        if local:
            raise ModelError(f"cannot load weights from {spec.name!r}: {first_line(exc)}") from None
        raise hub.explain("model", spec.name, exc) from None


def import_model_code(config: Any, optimization: Optimization) -> None:
    """Build the model once on the meta device (no memory): transformers imports its modeling
    code on the first build, about 110 MB that the process keeps for good and that belongs to
    no case, so it is paid before a case's footprint base is read (docs/measuring.md)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        AutoModelForCausalLM.from_config(
            config, attn_implementation=optimization.attn_implementation
        )


def n_params(model: torch.nn.Module) -> int:
    """Unique parameters: GPT-2's tied input/output embedding counts once (124,439,808 for gpt2)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def release() -> None:
    """Return the memory of models nobody refers to any more to the allocator (gc, CUDA's cache).

    It cannot drop a caller's references: the caller deletes its own (``del model``) first."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
