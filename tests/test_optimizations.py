"""Optimizations: skips decided before building, int8, padvocab, compile, attention-kernel probing.

Unit tests build the tiny preset; two smoke runs drive the real benchmarks (one compile case).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.pytorch_utils import Conv1D

from gpt2_fixtures.bench import counters, models, phases, prepare, steps
from gpt2_fixtures.bench import optimizations as opt
from gpt2_fixtures.config import Optimization, parse_optimization

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 50257


def tiny(optimization="sdpa"):
    spec = models.resolve_model("tiny", "random")
    return models.build(spec, parse_optimization(optimization), models.model_config(spec)).eval()


def batch(n=2, length=16):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(1))


def logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits


# -- optimizations and skips -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rid"),
    [
        ("int8", "sdpa-int8"),
        ("eager-int8", "eager-int8"),
        ("int8-compile", "sdpa-int8-compile"),
        ("flash2-fp16-compile", "flash2-fp16-compile"),
        ("padvocab", "sdpa-fp32-padvocab"),
        ("fusedadam-padvocab-compile-bf16", "sdpa-bf16-compile-padvocab-fusedadam"),
    ],
)
def test_optimization_ids(text, rid):
    assert parse_optimization(text).id == rid


def reason(text, phase="infer", device="cpu", explicit=True):
    return opt.skip_reason(parse_optimization(text), device, phase, explicit)


def test_flash2_on_cpu_skips_with_an_actionable_reason():
    expected = "flash_attention_2 needs CUDA"
    assert expected in reason("flash2", "train")
    assert reason("flash2").startswith("flash2-bf16: ")
    assert "this run: cpu" in reason("flash2")


def test_int8_skips_training_phases_and_runs_for_inference():
    for phase in ("train", "distill"):
        assert "post-training quantization for inference" in reason("int8", phase)
    assert reason("int8", "infer") is None
    assert reason("int8", "generate") is None
    assert "unquantized" in reason("int8-padvocab")


def test_fusedadam_needs_an_optimizer_step():
    assert reason("fusedadam", "train") is None  # torch 2.13 has a fused CPU AdamW
    assert "optimizer step" in reason("fusedadam", "infer")


def test_compile_needs_a_cpp_compiler_on_cpu(monkeypatch):
    monkeypatch.setattr(opt, "_cpp_compiler", lambda: None)
    assert "C++ compiler" in reason("sdpa-compile")
    monkeypatch.setattr(opt, "_cpp_compiler", lambda: "g++")
    assert reason("sdpa-compile") is None


def test_half_precision_on_cpu_only_when_named():
    assert "left out of the default CPU grid" in reason("sdpa-bf16", explicit=False)
    assert reason("sdpa-bf16", explicit=True) is None


def test_reference_optimization_is_plain_fp32():
    assert opt.reference_optimization(parse_optimization("flash2-bf16")) == Optimization(
        "sdpa", "fp32"
    )
    assert opt.reference_optimization(parse_optimization("eager-fp16")) == Optimization(
        "eager", "fp32"
    )
    assert opt.reference_optimization(parse_optimization("int8-compile")) == Optimization(
        "sdpa", "fp32"
    )
    assert opt.reduced(parse_optimization("int8")) and opt.reduced(parse_optimization("bf16"))
    assert not opt.reduced(parse_optimization("sdpa-compile"))
    assert phases.INFER.logit_check and not phases.GENERATE.logit_check


def test_weights_dtype():
    assert opt.weights_dtype(parse_optimization("int8"), "infer") == torch.int8
    assert opt.weights_dtype(parse_optimization("bf16"), "train") == torch.float32
    assert opt.weights_dtype(parse_optimization("fp16"), "infer") == torch.float16


# -- int8 -------------------------------------------------------------------------------------


def test_conv1d_to_linear_keeps_the_logits():
    model, ids = tiny(), batch()
    before = logits(model, ids)
    opt.conv1d_to_linear(model)
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert n_linear == 4 * model.config.n_layer + 1  # c_attn, c_proj, c_fc, c_proj; lm_head
    torch.testing.assert_close(logits(model, ids), before, rtol=1e-5, atol=1e-5)


def test_int8_quantizes_every_linear_and_stays_close_to_fp32():
    reference, ids = tiny(), batch()
    model = opt.apply(tiny(), parse_optimization("int8"), "cpu", "infer")
    dynamic = torch.ao.nn.quantized.dynamic.Linear  # prints as DynamicQuantizedLinear
    assert sum(isinstance(m, dynamic) for m in model.modules()) == 4 * model.config.n_layer + 1
    assert not any(type(m) in (nn.Linear, Conv1D) for m in model.modules())
    diff = opt.max_logit_diff(model, reference, ids)
    # int8 changes the logits (it really ran) but stays near the fp32 model: its error is well
    # under the spread of the logits themselves (measured: 0.04 against a std of 0.23).
    spread = float(logits(reference, ids).std())
    assert 0 < diff < 0.5 * spread


def test_max_logit_diff_is_zero_for_the_same_model_and_reports_nan():
    model, ids = tiny(), batch()
    assert opt.max_logit_diff(model, model, ids) == 0.0

    class NaNLogits(nn.Module):
        def forward(self, input_ids, use_cache):
            return type("Out", (), {"logits": torch.full((*input_ids.shape, VOCAB), math.nan)})()

    assert math.isnan(opt.max_logit_diff(NaNLogits(), model, ids))


# -- padvocab ---------------------------------------------------------------------------------


def test_padded_size():
    assert opt.padded_size(50257) == 50304 == 786 * 64
    assert opt.padded_size(50304) == 50304


def test_padvocab_pads_rows_keeps_the_tie_and_masks_the_padded_logits():
    model, ids = tiny(), batch()
    before = logits(model, ids)
    padded = opt.apply(tiny(), parse_optimization("padvocab"), "cpu", "infer")
    assert padded.get_input_embeddings().weight.shape[0] == 50304
    assert padded.get_output_embeddings().weight is padded.get_input_embeddings().weight
    assert padded.config.vocab_size == 50304 and model.config.vocab_size == VOCAB
    after = logits(padded, ids)
    torch.testing.assert_close(after[..., :VOCAB], before, rtol=1e-5, atol=1e-5)
    assert bool((after[..., VOCAB:] == opt.PAD_LOGIT).all())
    assert bool((after.softmax(-1)[..., VOCAB:] == 0).all())  # exactly 0 probability
    assert opt.max_logit_diff(padded, model, ids) < 1e-4  # compares the real columns only


def test_padvocab_leaves_the_shared_config_alone():
    spec = models.resolve_model("tiny", "random")
    config = models.model_config(spec)
    model = models.build(spec, parse_optimization("padvocab"), config)
    opt.pad_vocab(model)
    assert config.vocab_size == VOCAB  # the session's config, shared by the next models
    assert model.transformer.config is model.config


def test_padvocab_distillation_divergence_is_finite():
    """KL between two padded models: the masked columns add 0, not 0 * inf = NaN."""
    ids = batch()
    student, teacher = (
        opt.apply(tiny(), parse_optimization("padvocab"), "cpu", "infer") for _ in "st"
    )
    kl = torch.nn.functional.kl_div(
        logits(student, ids).log_softmax(-1), logits(teacher, ids).softmax(-1), reduction="sum"
    )
    assert math.isfinite(float(kl)) and float(kl) == pytest.approx(0.0, abs=1e-3)


def test_padvocab_training_reproduces_the_unpadded_losses():
    """Same loss before and after an AdamW step: the padded rows never change the real ones."""
    ids = batch(1, 32)
    losses = {}
    for text in ("sdpa", "sdpa-padvocab"):
        optimization = parse_optimization(text)
        model = opt.apply(tiny(), optimization, "cpu", "train")
        step, state = steps.train_step(model, ids, optimization, "cpu")
        losses[text] = []
        for _ in range(2):
            torch.manual_seed(7)  # the same dropout masks for both models
            step()
            losses[text].append(state.loss())
        if text == "sdpa-padvocab":
            pad_rows = model.get_input_embeddings().weight[VOCAB:]
            assert torch.count_nonzero(pad_rows) == 0  # zero gradient, zero decay: still zero
    assert losses["sdpa-padvocab"] == pytest.approx(losses["sdpa"], rel=1e-5)
    assert losses["sdpa"][1] < losses["sdpa"][0]  # it did train


# -- compile and the attention kernel ---------------------------------------------------------


def test_compile_step_counts_only_the_calls_that_compiled(monkeypatch):
    frames = iter([0, 1, 1, 2, 2, 2])  # before/after of three calls: compiles, compiles, not
    monkeypatch.setattr(prepare, "_frames_compiled", lambda: next(frames))
    calls = []
    assert prepare.compile_step(lambda: calls.append(1)) >= 0.0
    assert len(calls) == 3
    frames_once = iter([5, 6, 6, 6])
    monkeypatch.setattr(prepare, "_frames_compiled", lambda: next(frames_once))
    calls.clear()
    prepare.compile_step(lambda: calls.append(1))
    assert len(calls) == 2  # the second call compiled nothing: stop


@pytest.mark.parametrize(
    ("op", "kernel"),
    [
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "flash"),
        ("aten::_scaled_dot_product_flash_attention_backward", "flash"),
        ("aten::_scaled_dot_product_efficient_attention", "efficient"),
        ("aten::_scaled_dot_product_cudnn_attention", "cudnn"),
        ("aten::_scaled_dot_product_attention_math", "math"),
        ("flash_attn::_flash_attn_forward", "flash_attention_2"),
        ("aten::scaled_dot_product_attention", None),  # the dispatching op, not a backend
        ("aten::mm", None),
    ],
)
def test_kernel_of(op, kernel):
    assert prepare.kernel_of(op) == kernel


def test_kernels_in_keeps_first_appearance_order():
    ops = [
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_attention_math",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
    ]
    assert prepare.kernels_in(ops) == ["flash", "math"]


@pytest.mark.parametrize(
    ("backend", "kernel"), [(SDPBackend.MATH, "math"), (SDPBackend.FLASH_ATTENTION, "flash")]
)
def test_attention_kernel_reports_the_backend_that_ran(backend, kernel):
    """Force each CPU backend: the profile must name the one forced, not the one assumed."""
    model, ids, optimization = tiny(), batch(), parse_optimization("sdpa")

    def step():
        with sdpa_kernel([backend]):
            logits(model, ids)

    assert prepare.attention_kernel(step, optimization) == kernel


def test_attention_kernel_reads_a_given_profile_without_running_the_step():
    """The settled profiled step's ops name the kernels (teacher's first, then the student's):
    no call of its own."""
    profile = counters.from_events(
        [
            "aten::linear",
            "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_attention_math",
            "aten::_scaled_dot_product_flash_attention_for_cpu",
        ],
        [],
    )
    step = lambda: pytest.fail("the step ran")  # noqa: E731
    assert prepare.attention_kernel(step, parse_optimization("sdpa"), profile) == "flash+math"
    nothing = counters.from_events(["aten::mm"], [])
    assert prepare.attention_kernel(step, parse_optimization("eager"), nothing) == "eager"
    assert prepare.attention_kernel(step, parse_optimization("sdpa"), nothing) == "unknown"


def test_the_profiled_step_keeps_the_kernel_ops_of_every_namespace_in_call_order():
    model, ids = tiny(), batch()

    def step():
        with sdpa_kernel([SDPBackend.MATH]):
            logits(model, ids)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            logits(model, ids)

    names = counters.profile_step(step).op_names
    assert prepare.kernels_in(list(names)) == ["math", "flash"]
    assert len(names) == len(set(names))


def test_attention_kernel_of_eager_attention():
    model, ids = tiny("eager"), batch()
    assert (
        prepare.attention_kernel(lambda: logits(model, ids), parse_optimization("eager")) == "eager"
    )


# -- smoke runs of the real benchmarks -------------------------------------------------------

KEYS = {
    "phase", "model", "optimization", "attn_implementation", "dtype", "device", "device_name",
    "batch_size", "seq_len", "n_params", "samples_per_s", "samples_per_s_std", "tokens_per_s",
    "tokens_per_s_std", "peak_memory_mb", "peak_memory_mb_std", "memory_kind",
    "peak_reserved_mb", "control_round_s", "time_ratio_median", "flops_per_step",
    "achieved_tflops", "mfu", "peak_tflops", "attn_kernel", "compile_s", "max_logit_diff",
}  # fmt: skip
TINY = ["--gpt2-model", "tiny", "--gpt2-device", "cpu", "--gpt2-rounds", "2",
        "--gpt2-warmup", "0", "--gpt2-batch-sizes", "1", "--gpt2-seq-lens", "16",
        "-p", "no:cacheprovider", "-rs"]  # fmt: skip


def run_benchmarks(tmp_path, *args):
    out = tmp_path / "out.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "benchmarks", *TINY, *args, f"--benchmark-json={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benches = json.loads(out.read_text())["benchmarks"]
    return {b["extra_info"]["optimization"]: b["extra_info"] for b in benches}, proc.stdout


def test_smoke_inference_int8_compile_and_flash2_skip(tmp_path):
    infos, stdout = run_benchmarks(
        tmp_path, "-m", "inference", "--gpt2-optimizations", "sdpa,int8,sdpa-compile,flash2"
    )
    assert set(infos) == {"sdpa-fp32", "sdpa-int8", "sdpa-fp32-compile"}
    for info in infos.values():
        assert set(info) >= KEYS, KEYS - set(info)
        assert info["flops_per_step"] == 16 * (2 * 6_829_696 + 4 * 2 * 128 * 16)
        assert info["achieved_tflops"] > 0 and info["mfu"] is None  # a CPU has no known peak
    assert infos["sdpa-int8"]["dtype"] == "int8" and 0 < infos["sdpa-int8"]["max_logit_diff"] < 1
    assert infos["sdpa-fp32"]["max_logit_diff"] is None and infos["sdpa-fp32"]["compile_s"] is None
    assert infos["sdpa-fp32-compile"]["compile_s"] > 0
    assert infos["sdpa-fp32"]["attn_kernel"] == "flash"  # torch 2.13 CPU, no dropout in eval
    assert "flash2-bf16: flash_attention_2 needs CUDA and the flash-attn package" in stdout


def test_smoke_training_optimizations_and_peak_override(tmp_path):
    infos, stdout = run_benchmarks(
        tmp_path, "-m", "train", "--gpt2-optimizations", "sdpa-padvocab-fusedadam,int8",
        "--gpt2-peak-tflops", "2.5",
    )  # fmt: skip
    info = infos["sdpa-fp32-padvocab-fusedadam"]
    assert set(info) >= KEYS and math.isfinite(info["loss"])
    assert info["n_params"] == 6_960_768  # the model's size, not its padded rows
    assert info["peak_tflops"] == 2.5
    assert info["mfu"] == pytest.approx(info["achieved_tflops"] / 2.5)
    assert info["attn_kernel"] == "math"  # CPU flash attention has no dropout: math runs
    assert "sdpa-int8: int8 is post-training quantization for inference" in stdout
