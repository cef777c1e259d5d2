"""Optimizations applied to a built model: each a small function, model -> model.

``skip_reason`` decides, before any model is built, whether the device and phase can run a
optimization; the benchmark then reports a skip with that reason instead of a crash or a meaningless
number. ``apply`` turns the fp32 model that ``models.build`` made into the optimization's model:
vocabulary padding, precision, device, int8 quantization, mode, ``torch.compile``.
``prepare`` runs before the measured rounds: it compiles (timed apart as ``compile_s``) and finds
out which attention kernel really runs (``attn_kernel``). docs/optimizations.md is the user's
side of this module.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import shutil
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpt2_fixtures.config import PHASE, PRECISIONS, Optimization

# The torch dtype of each precision named in config.PRECISIONS.
DTYPES = {name: getattr(torch, dtype) for name, dtype in PRECISIONS.items()}
# nanoGPT pads GPT-2's 50,257 tokens to 50,304 = 786 x 64: matmul tiles then divide the LM head.
VOCAB_MULTIPLE = 64
# The padded logits: finite in fp16 (max 65504) and bf16, and exp(PAD_LOGIT - max) is exactly 0.
PAD_LOGIT = -1.0e4


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def trains(phase: str) -> bool:
    """Whether the phase's step trains (an optimizer step on fp32 master weights)."""
    return PHASE[phase].trains


# ---------------------------------------------------------------------------------------------
# What can run where (decided before anything is built)


def skip_reason(
    optimization: Optimization, device: str, phase: str, explicit: bool = False
) -> str | None:
    """Why ``optimization`` cannot run on ``device`` in ``phase`` (``None`` when it can).

    ``explicit`` is True when the user named the optimization: half precision on a CPU then runs
    (slowly) instead of being skipped.
    """
    checks = (_phase_reason, _flash2_reason, _int8_reason, _compile_reason, _precision_reason)
    for check in checks:
        reason = check(optimization, device, phase, explicit)
        if reason is not None:
            return f"{optimization.id}: {reason}"
    return None


def _phase_reason(
    optimization: Optimization, device: str, phase: str, explicit: bool
) -> str | None:
    training = trains(phase)
    if optimization.int8 and training:
        return (
            "int8 is post-training quantization for inference (int8 weights take no optimizer "
            f"step); it runs in the infer and generate phases, not {phase}"
        )
    if optimization.fused_adamw and not training:
        return f"fusedadam changes only the optimizer step, and the {phase} phase has none"
    if optimization.fused_adamw and torch.device(device).type not in _fused_adamw_devices():
        return f"fused AdamW has no kernel for {device} in torch {torch.__version__}"
    if optimization.int8 and optimization.pad_vocab:
        return "padvocab replaces the LM head, which int8 would then leave unquantized"
    return None


def _fused_adamw_devices() -> list[str]:
    """Device types with a fused AdamW kernel, as torch itself lists them (cpu since 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # the private helper moved: fall back to the documented pair
        return ["cuda", "cpu"]
    return list(_get_fused_kernels_supported_devices())


def _flash2_reason(
    optimization: Optimization, device: str, phase: str, explicit: bool
) -> str | None:
    if optimization.attention != "flash2":
        return None
    has_package = importlib.util.find_spec("flash_attn") is not None
    if not is_cuda(device) or not has_package:
        missing = [] if is_cuda(device) else ["CUDA"]
        if not has_package:
            missing.append("the flash-attn package (pip install flash-attn)")
        return f"flash_attention_2 needs {' and '.join(missing)}; this run: {device}"
    if optimization.precision == "fp32":
        return "flash_attention_2 runs in fp16 or bf16 only; use flash2-bf16 or flash2-fp16"
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if major < 8:
        name = torch.cuda.get_device_name(torch.device(device))
        return (
            f"flash_attention_2 needs an Ampere or newer GPU (compute capability >= 8.0); "
            f"{name} is {major}.{minor}: use sdpa"
        )
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "the installed flash-attn does not load with this torch/transformers (reinstall it)"
    return None


def _int8_reason(optimization: Optimization, device: str, phase: str, explicit: bool) -> str | None:
    if not optimization.int8:
        return None
    if is_cuda(device):
        if importlib.util.find_spec("torchao") is None:
            return f"int8 on CUDA needs torchao (pip install torchao); {device} has none here"
        return None
    if not hasattr(torch.ao.quantization, "quantize_dynamic"):
        return f"this torch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic"
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if not engines:
        return f"this torch build has no quantized CPU engine (fbgemm, x86, qnnpack): {device}"
    return None


def _compile_reason(
    optimization: Optimization, device: str, phase: str, explicit: bool
) -> str | None:
    if not optimization.compile:
        return None
    if is_cuda(device) and importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs triton (it comes with the CUDA builds of torch)"
    if not is_cuda(device) and not _cpp_compiler():
        return "torch.compile on a CPU needs a C++ compiler (g++ or clang++; set CXX)"
    return None


def _cpp_compiler() -> str | None:
    """The C++ compiler inductor would call for CPU code ($CXX, else g++, c++, clang++)."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _precision_reason(
    optimization: Optimization, device: str, phase: str, explicit: bool
) -> str | None:
    if optimization.precision == "bf16" and is_cuda(device) and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(torch.device(device))
        return f"bf16 is not supported on {name} (compute capability < 8.0); use fp16"
    if optimization.precision != "fp32" and not is_cuda(device) and not explicit:
        return (
            f"{optimization.precision} on a CPU runs 20-150x slower than fp32 and is left out "
            "of the default CPU grid; name it in --gpt2-optimizations to run it anyway"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Precision


def autocast(optimization: Optimization, device: str, phase: str) -> AbstractContextManager[Any]:
    """Mixed precision for training: fp32 master weights, fp16/bf16 matmuls.

    Pure fp16 weights break AdamW (its eps of 1e-8 underflows to 0 in fp16, so rows with zero
    gradient become 0/0 = NaN); autocast with fp32 weights is what fp16/bf16 training means in
    practice (torch.amp, the Hugging Face Trainer's --fp16/--bf16).
    """
    if trains(phase) and optimization.precision != "fp32":
        return torch.autocast(
            device_type=torch.device(device).type, dtype=DTYPES[optimization.precision]
        )
    return nullcontext()


def weights_dtype(optimization: Optimization, phase: str) -> torch.dtype:
    """Training keeps fp32 master weights; inference casts them (``model.half()`` for fp16).

    int8 reports ``torch.int8``: the matmul weights are int8 (embeddings and layer norms stay
    fp32, activations are fp32).
    """
    if trains(phase):
        return torch.float32
    if optimization.int8:
        return torch.int8
    return DTYPES[optimization.precision]


def grad_scaler(optimization: Optimization, device: str, phase: str) -> torch.amp.GradScaler | None:
    """fp16 training needs loss scaling (gradients underflow in fp16); bf16 does not."""
    if trains(phase) and optimization.precision == "fp16":
        return torch.amp.GradScaler(torch.device(device).type)
    return None


# ---------------------------------------------------------------------------------------------
# apply: the optimization's model


def apply(model: nn.Module, optimization: Optimization, device: str, phase: str) -> nn.Module:
    """Pad, cast, move, quantize, set the mode, compile; attention was chosen at build time."""
    if optimization.pad_vocab:
        pad_vocab(model)
    dtype = weights_dtype(optimization, phase)
    if dtype == torch.float16:
        model = model.half()  # the seed's "quantization", kept as its spelling
    elif dtype.is_floating_point and dtype != torch.float32:
        model = model.to(dtype)
    model = model.to(device)
    if optimization.int8:
        model = quantize_int8(model, device)
    model.train(trains(phase))
    if optimization.compile:
        # Lazy: compilation happens on the first call, which ``prepare`` times as compile_s.
        model = torch.compile(model)  # type: ignore[assignment]
    return model


class PaddedLMHead(nn.Module):
    """An LM head over a vocabulary padded to a multiple of 64 whose padded logits are masked.

    The matmul runs over the padded rows (aligned tiles: the speed-up of nanoGPT's 50304) and a
    bias adds ``PAD_LOGIT`` to the padded columns inside the same GEMM. Their softmax
    probability is then exactly 0 in fp32 (exp underflows), so the loss on real tokens is the
    unpadded model's, bit for bit, and their gradient is exactly 0.

    Why a finite mask, not -inf and not a slice: -inf makes a KL divergence between two padded
    models (distillation) compute 0 * inf = NaN; slicing the logits back to 50,257 copies them
    (forward and backward), which cost a third of a tiny-preset CPU training step (measured
    side by side: slice 1.32x, mask 0.98x the unpadded step).
    """

    logit_mask: torch.Tensor

    def __init__(self, weight: torch.Tensor, vocab_size: int) -> None:
        super().__init__()
        self.weight = weight  # an nn.Parameter (the embedding's own when tied): registered
        self.vocab_size = vocab_size
        mask = torch.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype)
        mask[vocab_size:] = PAD_LOGIT
        self.register_buffer("logit_mask", mask)  # a buffer: cast and moved, never trained

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight, self.logit_mask)


def padded_size(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    return -(-vocab_size // multiple) * multiple


def pad_vocab(model: Any, multiple: int = VOCAB_MULTIPLE) -> None:
    """Pad the token embedding and the LM head to a multiple of ``multiple`` rows (in place).

    The padded embedding rows are zero and never looked up (token ids are < vocab_size). The
    model gets its own copy of the config with the padded ``vocab_size`` (transformers' loss
    views the logits with it); the caller's config object, shared with other models, is left
    as it was.
    """
    old = model.get_input_embeddings()
    vocab, width = old.weight.shape
    size = padded_size(vocab, multiple)
    if size == vocab:
        return
    tied = model.get_output_embeddings().weight is old.weight
    padded = torch.zeros(size, width, device=old.weight.device, dtype=old.weight.dtype)
    padded[:vocab] = old.weight.detach()
    # _weight: no random initialization, so the RNG stream (dropout masks) stays the unpadded
    # model's and a padded training run reproduces its losses.
    embedding = nn.Embedding(size, width, _weight=padded)
    model.set_input_embeddings(embedding)
    if tied:
        head_weight = embedding.weight
    else:
        head = model.get_output_embeddings().weight
        head_weight = nn.Parameter(torch.zeros(size, width, device=head.device, dtype=head.dtype))
        with torch.no_grad():
            head_weight[:vocab] = head
    model.set_output_embeddings(PaddedLMHead(head_weight, vocab))
    _own_config(model, vocab_size=size)


def _own_config(model: nn.Module, **changes: Any) -> None:
    """Give ``model`` (and its submodules that share it) a changed copy of its config."""
    old = model.config
    new = copy.deepcopy(old)
    for key, value in changes.items():
        setattr(new, key, value)
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = new


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """Replace transformers' ``Conv1D`` (GPT-2's projections) by the equivalent ``nn.Linear``.

    ``Conv1D(nf, nx)`` computes ``x @ W + b`` with ``W`` of shape (nx, nf); ``nn.Linear(nx, nf)``
    computes ``x @ W'.T + b`` with ``W'`` of shape (nf, nx), so ``W' = W.T``. Quantization
    libraries (torch.ao's dynamic quantization, torchao) only rewrite ``nn.Linear``.
    """
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, Conv1D):
                continue
            nx, nf = child.weight.shape
            linear = nn.Linear(nx, nf, device=child.weight.device, dtype=child.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(child.weight.t())
                linear.bias.copy_(child.bias)
            setattr(parent, name, linear)
    return model


def quantize_int8(model: nn.Module, device: str) -> nn.Module:
    """Post-training int8 quantization of every linear layer (the tied LM head included).

    CPU: dynamic quantization (``torch.ao.quantization.quantize_dynamic``): int8 weights with a
    per-output-channel scale, activations quantized per batch at run time, fbgemm/x86 int8
    GEMMs. CUDA: torchao's int8 weight-only quantization (int8 weights, fp32 activations).
    """
    model = conv1d_to_linear(model)
    if is_cuda(device):
        return _torchao_int8_weight_only(model)
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # torch.ao.quantization is deprecated in favour of torchao but is still torch's CPU dynamic
    # int8 path in this version; its deprecation warnings say nothing about this benchmark.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def _torchao_int8_weight_only(model: nn.Module) -> nn.Module:
    from torchao.quantization import quantize_

    try:  # torchao >= 0.10 spells it as a config class
        from torchao.quantization import Int8WeightOnlyConfig

        config: Any = Int8WeightOnlyConfig()
    except ImportError:
        from torchao.quantization import int8_weight_only

        config = int8_weight_only()
    quantize_(model, config)
    return model


def reference_optimization(optimization: Optimization) -> Optimization:
    """The fp32 model a reduced-precision inference optimization is compared with (max_logit_diff).

    Same attention implementation (sdpa for flash2, which has no fp32), no int8, no compile,
    no padding: the plain model whose logits the optimized one should reproduce.
    """
    attention = "sdpa" if optimization.attention == "flash2" else optimization.attention
    return Optimization(attention=attention)


def reduced(optimization: Optimization) -> bool:
    """Reduced precision (int8, fp16, bf16): an inference phase with a logit check records its
    ``max_logit_diff`` against fp32 (``phases.Adapter.logit_check``)."""
    return optimization.dtype != "float32"


def max_logit_diff(model: nn.Module, reference: nn.Module, batch: torch.Tensor) -> float:
    """Largest |logit - fp32 logit| over ``batch`` (the case's own batch), in fp32.

    The optimized model runs the whole batch (the shape it was compiled for); the reference
    runs one sequence at a time, so only one fp32 copy of a sequence's logits is alive.
    """
    worst = 0.0
    with torch.inference_mode():
        logits = model(input_ids=batch, use_cache=False).logits
        for i in range(batch.shape[0]):
            ref = reference(input_ids=batch[i : i + 1], use_cache=False).logits.float()
            real = logits[i : i + 1, :, : ref.shape[-1]]  # padvocab's masked columns: not logits
            diff = (real.float() - ref).abs().max().item()
            if math.isnan(diff):
                return diff  # NaN logits are reported, never hidden by max()
            worst = max(worst, diff)
    return worst
