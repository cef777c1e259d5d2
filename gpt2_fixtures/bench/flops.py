"""FLOPs per step, achieved TFLOP/s and model FLOPs utilization (MFU).

The formula (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT ``model.py`` ``estimate_mfu``)::

    training:      6 N + 12 L H Q T   FLOPs per token   (forward + backward)
    forward only:  2 N +  4 L H Q T   FLOPs per token   (one third of it)

``2 N`` is one multiply-add per weight of every matmul; the backward pass costs twice the
forward (gradients with respect to activations and to weights), hence ``6 N``. The attention
term counts ``Q K^T`` and ``softmax(.) V``: ``2 * 2 * T * Q`` FLOPs per head per token forward,
over ``L`` layers and ``H`` heads, times 3 with the backward pass.

Which N: the parameters that are the weight of a matmul. That is every parameter except the
position embedding, which is a lookup: nanoGPT's ``get_num_params(non_embedding=True)``. GPT-2's
token embedding is tied to the LM head, so it is counted once, as the LM head's matmul (the
lookup itself is free). Excluding it as Kaplan et al. 2020 do would drop the largest single
matmul: a third of gpt2-small's FLOPs. Layer norms and biases are counted although they are not
matmuls (0.1 % for gpt2-small), as nanoGPT does.

Which T: the case's sequence length (nanoGPT uses the configured ``block_size``; the attention
matrices here are ``seq_len x seq_len``).

llm.c (``train_gpt2.cu``, ``gpt2_estimate_mfu``) uses ``6 N + 6 L C T`` with ``C = H Q``: half of
this attention term, because a causal kernel skips the masked upper triangle; its N is all
parameters, position embedding and vocabulary padding included. We keep PaLM's full term: it
is the convention of published MFU figures, and eager/math attention computes the whole
``T x T`` matrix anyway. FLOPs always come from the model's architecture (its config), never from
the built model, so that int8 (packed weights) and padvocab (padded rows) count the same useful
work as the fp32 model and their MFU stays comparable.

The peak: dense (no 2:4 sparsity) tensor throughput of the compute dtype, from the vendor's
datasheet. Where a datasheet lists only the sparse figure (marked ``*`` "with sparsity"), the
dense figure is half of it. MFU is ``None`` where the peak is unknown -- every CPU, any GPU
missing from the table -- unless the user passes ``--gpt2-peak-tflops``.
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gpt2_fixtures.bench.errors import parse_finite

# ---------------------------------------------------------------------------------------------
# FLOPs


@dataclass(frozen=True)
class Architecture:
    """What the FLOPs formula needs from a GPT-2 config."""

    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    n_positions: int
    n_inner: int

    @classmethod
    def from_config(cls, config: Any) -> Architecture:
        n_embd = int(config.n_embd)
        return cls(
            n_layer=int(config.n_layer),
            n_head=int(config.n_head),
            n_embd=n_embd,
            vocab_size=int(config.vocab_size),
            n_positions=int(config.n_positions),
            n_inner=int(getattr(config, "n_inner", None) or 4 * n_embd),
        )

    @property
    def n_params(self) -> int:
        """All parameters of GPT2LMHeadModel with the tied embedding counted once."""
        return self.n_matmul_params + self.n_positions * self.n_embd

    @property
    def n_matmul_params(self) -> int:
        """N of the formula: every parameter except the position embedding (see module doc)."""
        d, inner = self.n_embd, self.n_inner
        block = (
            2 * d  # ln_1
            + d * 3 * d + 3 * d  # attn.c_attn (q, k, v)
            + d * d + d  # attn.c_proj
            + 2 * d  # ln_2
            + d * inner + inner  # mlp.c_fc
            + inner * d + d  # mlp.c_proj
        )  # fmt: skip
        return self.vocab_size * d + self.n_layer * block + 2 * d  # wte (= lm head), ln_f

    def attention_flops_per_token(self, seq_len: int) -> int:
        """Forward ``Q K^T`` and ``A V`` per token: 2 matmuls x 2 FLOPs x T x Q x H x L."""
        head_dim = self.n_embd // self.n_head
        return 4 * self.n_layer * self.n_head * head_dim * seq_len


def architecture(config: Any) -> Architecture | None:
    """The config's GPT-2 architecture; None for a checkpoint of another family (no FLOPs)."""
    try:
        return Architecture.from_config(config)
    except (AttributeError, TypeError, ValueError):
        return None


def flops_per_token(arch: Architecture, seq_len: int, trains: bool) -> int:
    """``6N + 12LHQT`` for a training step, ``2N + 4LHQT`` for a forward pass (PaLM app. B)."""
    forward = 2 * arch.n_matmul_params + arch.attention_flops_per_token(seq_len)
    return 3 * forward if trains else forward


def flops_per_step(arch: Architecture, batch_size: int, seq_len: int, trains: bool) -> int:
    """FLOPs of one forward (and backward when ``trains``) over ``batch x seq_len``.

    generate (a prefill plus a KV-cached decode of growing context) and distill (a teacher
    forward beside the student's step) have their own counts below; their adapters use them.
    """
    return flops_per_token(arch, seq_len, trains) * batch_size * seq_len


def generate_flops(arch: Architecture, batch_size: int, prompt_len: int, new_tokens: int) -> int:
    """Greedy generation with a KV cache: a prefill forward over the prompt (which yields the
    first new token), then one single-token forward per further token, attending to a context
    that has grown to ``prompt_len + k``: the forward formula with ``T`` = that context."""
    prefill = flops_per_token(arch, prompt_len, False) * prompt_len
    decode = sum(flops_per_token(arch, prompt_len + k, False) for k in range(1, new_tokens))
    return (prefill + decode) * batch_size


def distill_flops(
    teacher: Architecture, student: Architecture, batch_size: int, seq_len: int
) -> int:
    """A teacher forward plus a student training step over the same ``batch x seq_len``."""
    per_token = flops_per_token(teacher, seq_len, False) + flops_per_token(student, seq_len, True)
    return per_token * batch_size * seq_len


def achieved_tflops(step_flops: float, times_s: Sequence[float]) -> float:
    """``FLOPs / median round time``, in TFLOP/s: the basis of ``tokens_per_s``
    (docs/measuring.md, "Throughput")."""
    return step_flops / statistics.median(times_s) / 1e12


# ---------------------------------------------------------------------------------------------
# Device peaks


@dataclass(frozen=True)
class DevicePeak:
    """Dense peak TFLOP/s of one GPU model per compute dtype, with where the numbers come from.

    dtype keys: ``float32`` (CUDA cores, no TF32), ``tf32``, ``bfloat16`` and ``float16``
    (tensor cores, FP32 accumulate: what PyTorch's matmuls use), ``int8`` (TOPS).
    """

    name: str
    pattern: str  # regular expression searched in torch.cuda.get_device_name(), any case
    tflops: dict[str, float]
    source: str


def _tflops(
    fp32: float,
    tf32: float | None = None,
    half: float | None = None,
    int8: float | None = None,
    *,
    bf16: bool = True,
    sparse: bool = False,
) -> dict[str, float]:
    """A row's peaks as the datasheet prints them. ``half``: fp16 (and bf16 unless ``bf16`` is
    False) tensor TFLOP/s. ``sparse``: the datasheet gives the tensor figures "with sparsity"
    (2:4 structured sparsity doubles them), so the dense figure is half; fp32 on the CUDA cores
    has no sparse variant."""
    scale = 0.5 if sparse else 1.0
    row = {"float32": fp32, "tf32": tf32, "float16": half, "bfloat16": half if bf16 else None}
    row["int8"] = int8
    return {
        dtype: value if dtype == "float32" else value * scale
        for dtype, value in row.items()
        if value is not None
    }


# Order matters: the first pattern that matches wins (NVL and PCIe before the generic SXM).
PEAKS: tuple[DevicePeak, ...] = (
    DevicePeak(
        "H200 NVL",
        r"\bH200\b.*\bNVL\b",
        _tflops(60, tf32=835, half=1671, int8=3341, sparse=True),
        "NVIDIA H200 Tensor Core GPU datasheet, H200 NVL column",
    ),
    DevicePeak(
        "H200 SXM",
        r"\bH200\b",
        _tflops(67, tf32=989, half=1979, int8=3958, sparse=True),
        "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column",
    ),
    DevicePeak(
        "H100 NVL",
        r"\bH100\b.*\bNVL\b",
        _tflops(60, tf32=835, half=1671, int8=3341, sparse=True),
        "NVIDIA H100 Tensor Core GPU datasheet, H100 NVL column",
    ),
    DevicePeak(
        "H100 PCIe",
        r"\bH100\b.*\bPCIe\b",
        _tflops(51, tf32=756, half=1513, int8=3026, sparse=True),
        "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column",
    ),
    DevicePeak(
        "H100 SXM",
        r"\bH100\b.*\b(SXM|HBM3)",  # torch names the SXM5 board "NVIDIA H100 80GB HBM3"
        _tflops(67, tf32=989, half=1979, int8=3958, sparse=True),
        "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column",
    ),
    DevicePeak(
        "A100",  # SXM4 and PCIe, 40 and 80 GB share one column of peaks in the datasheet
        r"\bA100\b",
        _tflops(19.5, tf32=156, half=312, int8=624),
        "NVIDIA A100 Tensor Core GPU datasheet (dense figures; the starred ones are sparse)",
    ),
    DevicePeak(
        "A10G",
        r"\bA10G\b",
        # NVIDIA publishes no A10G datasheet (an AWS-only GA102 board). The figures match its 80
        # SMs at 1710 MHz: 80 x 128 FP32 lanes x 2 x 1.71 GHz = 35.0 TFLOP/s, and GA102's
        # consumer-class tensor rate with FP32 accumulate, 512 FLOP/clock/SM, = 70.0 TFLOP/s.
        _tflops(35, half=70),
        "Baseten, 'NVIDIA A10 vs A10G for ML model inference' (spec table), cross-checked "
        "against the SM count and boost clock",
    ),
    DevicePeak(
        "A10",
        r"\bA10\b",
        _tflops(31.2, tf32=62.5, half=125, int8=250),
        "NVIDIA A10 Tensor Core GPU datasheet (dense figures; the starred ones are sparse)",
    ),
    DevicePeak(
        "L4",
        r"\bL4\b",
        _tflops(30.3, tf32=120, half=242, int8=485, sparse=True),
        "NVIDIA L4 Tensor Core GPU datasheet",
    ),
    DevicePeak(
        "T4",  # Turing: no bf16, no tf32
        r"\bT4\b",
        _tflops(8.1, half=65, int8=130, bf16=False),
        "NVIDIA T4 Tensor Core GPU datasheet (FP16/FP32 mixed precision 65 TFLOPS)",
    ),
    DevicePeak(
        "GeForce RTX 4090",
        r"\bRTX 4090$",  # not the "RTX 4090 D" (fewer SMs) nor the laptop part
        _tflops(82.6, tf32=82.6, half=165.2, int8=660.6),
        "NVIDIA Ada Lovelace GPU architecture whitepaper, appendix A, GeForce RTX 4090 "
        "(dense; FP16/BF16 tensor with FP32 accumulate)",
    ),
    DevicePeak(
        "V100 SXM2",
        r"\bV100-SXM2\b",
        _tflops(15.7, half=125, bf16=False),
        "NVIDIA Tesla V100 datasheet, SXM2 column",
    ),
    DevicePeak(
        "V100 PCIe",
        r"\bV100-PCIE\b",
        _tflops(14, half=112, bf16=False),
        "NVIDIA Tesla V100 datasheet, PCIe column",
    ),
)


def lookup(device_name: str) -> DevicePeak | None:
    """The table row whose pattern matches ``device_name`` (first match wins), else None."""
    name = " ".join(device_name.split())
    for peak in PEAKS:
        if re.search(peak.pattern, name, flags=re.IGNORECASE):
            return peak
    return None


def tf32_matmul() -> bool:
    """Whether fp32 matmuls on CUDA run on TF32 tensor cores (PyTorch's default is no)."""
    matmul = torch.backends.cuda.matmul
    if getattr(matmul, "fp32_precision", None) == "tf32":  # the torch >= 2.9 spelling
        return True
    return bool(matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"


def compute_dtype(precision: str, int8: bool, tf32: bool) -> str:
    """The peak column an optimization's matmuls run at.

    fp16/bf16: training runs its matmuls under autocast in that dtype, inference in it. fp32
    runs on TF32 tensor cores when enabled. int8: the CUDA path is weight-only (torchao), so its
    matmuls run in the fp32 activation dtype; the CPU path has no peak anyway.
    """
    del int8  # weight-only int8 computes in the activation dtype, see above
    if precision == "bf16":
        return "bfloat16"
    if precision == "fp16":
        return "float16"
    return "tf32" if tf32 else "float32"


def peak_tflops(device: str, device_name: str, dtype: str) -> float | None:
    """Dense peak TFLOP/s of a CUDA device in ``dtype``; None on a CPU or an unknown GPU."""
    if not device.startswith("cuda"):
        return None
    row = lookup(device_name)
    return None if row is None else row.tflops.get(dtype)


def mfu(achieved: float | None, peak: float | None) -> float | None:
    """Achieved over peak TFLOP/s; None where either is unknown, never a guess."""
    if achieved is None or peak is None or peak <= 0:
        return None
    return achieved / peak


def flops_metrics(
    step_flops: int | None, times_s: Sequence[float] | None, peak: float | None
) -> dict[str, Any]:
    """``extra_info``: ``flops_per_step``, ``achieved_tflops``, ``mfu`` and ``peak_tflops``."""
    achieved = achieved_tflops(step_flops, times_s) if step_flops and times_s else None
    return {
        "flops_per_step": step_flops,
        "achieved_tflops": achieved,
        "mfu": mfu(achieved, peak),
        "peak_tflops": peak,
    }


def parse_peak_tflops(text: str) -> float:
    """``--gpt2-peak-tflops``: a finite number > 0, in TFLOP/s."""
    value = parse_finite(text, "; expected the device's peak in TFLOP/s, e.g. 989.5")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the peak must be a finite number > 0")
    return value
