"""Control workloads: a fixed computation timed before every round, to measure the machine's speed.

The gate judges ``round_time / control_time`` where raw times drift with the load; why the twin
and how it was measured: docs/measuring.md, "Control workload".
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpt2_fixtures.bench.measure import Control, synchronize
from gpt2_fixtures.bench.optimizations import DTYPES
from gpt2_fixtures.config import Case

MATMUL = "matmul"
TWIN = "twin"
CONTROLS = (TWIN, MATMUL)  # --gpt2-control


def _timed(device: str, work: Callable[[], None]) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


class MatmulControl:
    """A fixed matmul loop: about a quarter of the step's FLOPs, in 384x384 fp32 matmuls on a
    CPU and 2048x2048 on CUDA, bounded to [16, 64] matmuls. Below 16 (about 15 ms on one CPU
    core) the control's own noise dominates: measured here, per-process ratios of one case
    spread 30% with 4 matmuls and 7% with 16. Its size is a pure function of the case, never
    calibrated on the machine, so baseline and current runs do the same work."""

    kind = MATMUL

    def __init__(self, device: str, step_flops: float) -> None:
        self.device = device
        n = 2048 if device.startswith("cuda") else 384
        gen = torch.Generator().manual_seed(0)
        self.a = torch.randn(n, n, generator=gen).to(device)
        self.b = torch.randn(n, n, generator=gen).to(device)
        self.repeats = int(min(64, max(16, round(0.25 * step_flops / (2 * n**3)))))

    def _work(self) -> None:
        for _ in range(self.repeats):
            torch.mm(self.a, self.b)

    def run(self) -> float:
        return _timed(self.device, self._work)


def approx_step_flops(n_params: int, tokens: int, trains: bool) -> float:
    """2N FLOPs per token forward, 6N with backward (Kaplan et al. 2020, section 2.1)."""
    return (6 if trains else 2) * n_params * tokens


@dataclass(frozen=True)
class TwinShape:
    """What the twin computes: a GPT-2 of this shape, in this kind of step (``TWINS``)."""

    vocab: int
    width: int
    heads: int
    layers: int
    positions: int
    batch: int
    seq: int
    twin: str  # a key of TWINS, named in control_kind
    decode_steps: int = 0  # generate: one-token forwards after the prefill

    @property
    def kind(self) -> str:
        return f"twin-{self.twin}"

    @property
    def trains(self) -> bool:
        return TWINS[self.twin][0]


# The twin's kinds (a phase adapter's ``twin``): whether it trains, whether it decodes after
# the prefill.
TWINS = {"train": (True, False), "infer": (False, False), "generate": (False, True)}


def twin_shape(config: Any, twin: str, batch: int, seq: int, tokens: int) -> TwinShape | None:
    """The twin of a GPT-2 ``config`` for a case, or None for a model that is not GPT-2-shaped.
    A decoding twin prefills ``seq`` tokens and decodes the rest of ``tokens`` (batch x new
    tokens)."""
    keys = ("vocab_size", "n_embd", "n_head", "n_layer", "n_positions")
    raw = [getattr(config, key, None) for key in keys]
    values = [v for v in raw if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    if twin not in TWINS or len(values) != len(keys):
        return None
    vocab, width, heads, layers, positions = values
    if width % heads or seq > positions:
        return None
    decode = max(0, tokens // batch - 1) if TWINS[twin][1] else 0
    return TwinShape(vocab, width, heads, layers, positions, batch, seq, twin, decode)


class TwinNet(nn.Module):
    """GPT-2's forward (Radford et al. 2019: pre-LN blocks, tied embeddings) with the layers
    sharing one block's weights. Linear layers are ``nn.Linear`` so that int8 cases can quantize
    them as the int8 optimization does."""

    def __init__(self, shape: TwinShape, gen: torch.Generator) -> None:
        super().__init__()
        self.shape = shape
        d = shape.width

        def randn(*size: int) -> torch.Tensor:
            return torch.randn(*size, generator=gen) * 0.02

        self.wte = nn.Parameter(randn(shape.vocab, d))
        self.wpe = nn.Parameter(randn(shape.positions, d))
        sizes = {"qkv": (d, 3 * d), "proj": (d, d), "fc": (d, 4 * d), "fc_proj": (4 * d, d)}
        self.linear = nn.ModuleDict()
        for name, (n_in, n_out) in sizes.items():
            layer = nn.Linear(n_in, n_out)
            with torch.no_grad():
                layer.weight.copy_(randn(n_out, n_in))
                layer.bias.copy_(randn(n_out))
            self.linear[name] = layer
        self.head = nn.Linear(d, shape.vocab, bias=False)
        self.head.weight = self.wte

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        s, lin = self.shape, self.linear
        b, t = ids.shape
        x = self.wte[ids] + self.wpe[start : start + t]
        for _ in range(s.layers):
            h = F.layer_norm(x, (s.width,))
            q, k, v = lin["qkv"](h).view(b, t, 3, s.heads, -1).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
            x = x + lin["proj"](a.transpose(1, 2).reshape(b, t, s.width))
            h = F.gelu(lin["fc"](F.layer_norm(x, (s.width,))), approximate="tanh")
            x = x + lin["fc_proj"](h)
        return self.head(F.layer_norm(x, (s.width,)))


class TwinControl:
    """A GPT-2 of the case's shape in plain torch, run as the case's step (docs/measuring.md).
    ``int8``: its linear layers dynamically quantized as the CPU int8 optimization's are."""

    def __init__(
        self, shape: TwinShape, device: str, dtype: torch.dtype, int8: bool = False
    ) -> None:
        self.shape, self.device, self.kind = shape, device, shape.kind
        gen = torch.Generator().manual_seed(0)
        train = shape.trains
        net = TwinNet(shape, gen).to(device=device, dtype=dtype).requires_grad_(train)
        self.net = _quantize_int8(net) if int8 else net
        self.ids = torch.randint(shape.vocab, (shape.batch, shape.seq), generator=gen).to(device)
        # lr=0: the optimizer does its full work and the weights stay what they are.
        self.opt = torch.optim.AdamW(net.parameters(), lr=0.0) if train else None

    def _work(self) -> None:
        s = self.shape
        if self.opt is not None:
            logits = self.net(self.ids)
            F.cross_entropy(logits.view(-1, s.vocab).float(), self.ids.view(-1)).backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            return
        with torch.inference_mode():
            self.net(self.ids)
            last = self.ids[:, -1:]
            for i in range(s.decode_steps):  # no KV cache: one token attends to itself
                self.net(last, start=min(s.seq + i, s.positions - 1))

    def run(self) -> float:
        return _timed(self.device, self._work)


def _quantize_int8(net: nn.Module) -> nn.Module:
    """torch's CPU dynamic int8 (per-channel int8 weights, fbgemm/x86 GEMMs), called here and not
    through optimizations.quantize_int8, so that a change to the optimization is not mirrored."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # deprecated for torchao, still torch's CPU int8 path
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(net, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def control_for(
    model: torch.nn.Module,
    device: str,
    case: Case,
    tokens: int,
    n_params: int,
    kind: str = TWIN,
    twin: str = "infer",
) -> Control:
    """The twin of ``model`` for this case when it is GPT-2-shaped and ``kind`` is twin, else
    the matmul loop. ``tokens``: tokens per step (generation: batch x new tokens); ``twin``: the
    phase adapter's kind of step (``TWINS``)."""
    if kind not in CONTROLS:
        raise ValueError(f"control {kind!r}: expected one of {', '.join(CONTROLS)}")
    config = getattr(model, "config", None) if kind == TWIN else None
    shape = twin_shape(config, twin, case.batch_size, case.seq_len, tokens)
    if shape is None:
        return MatmulControl(device, approx_step_flops(n_params, tokens, TWINS[twin][0]))
    # The optimization's compute dtype: fp16/bf16 training keeps fp32 weights under autocast,
    # but its matmuls run in half precision, and those are what the twin must mirror. int8 on
    # CUDA is torchao's weight-only int8, which the twin does not mirror: it runs in fp32 there.
    dtype = DTYPES[case.optimization.precision]
    int8 = case.optimization.int8 and not shape.trains and not device.startswith("cuda")
    return TwinControl(shape, device, dtype, int8=int8)
