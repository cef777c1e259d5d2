"""FLOPs per token against hand-computed gpt2-small numbers, the peak table, MFU."""

import argparse
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from gpt2_fixtures.bench import flops, models
from gpt2_fixtures.config import PRESETS

GPT2 = flops.Architecture(
    n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024, n_inner=3072
)


def preset_config(name):
    return models.model_config(models.resolve_model(name, "random"))


@pytest.mark.parametrize("name", ["tiny", "gpt2"])
def test_architecture_parameter_count_matches_the_built_model(name):
    config = preset_config(name)
    with torch.device("meta"):  # shapes only: no memory, no initialization
        model = AutoModelForCausalLM.from_config(config)
    assert flops.Architecture.from_config(config).n_params == models.n_params(model)


def test_gpt2_small_counts_by_hand():
    assert flops.Architecture.from_config(preset_config("gpt2")) == GPT2
    # 124,439,808 with the tied embedding counted once (the published gpt2-small size).
    assert GPT2.n_params == 124_439_808
    # N of the formula leaves out the position embedding, a lookup: 1024 x 768 = 786,432.
    assert GPT2.n_matmul_params == 124_439_808 - 786_432 == 123_653_376


def test_gpt2_small_flops_per_token_by_hand():
    # training at T = 1024: 6N + 12 L H Q T = 6 x 123,653,376 + 12 x 12 x 12 x 64 x 1024
    assert 6 * 123_653_376 == 741_920_256
    assert 12 * 12 * 12 * 64 * 1024 == 113_246_208
    assert flops.flops_per_token(GPT2, 1024, trains=True) == 741_920_256 + 113_246_208
    # forward at T = 1024: 2N + 4 L H Q T
    assert flops.flops_per_token(GPT2, 1024, trains=False) == 247_306_752 + 37_748_736
    # at T = 128 the attention term is 8x smaller
    assert flops.flops_per_token(GPT2, 128, trains=True) == 741_920_256 + 14_155_776


def test_flops_per_step_is_per_token_times_tokens():
    per_token = flops.flops_per_token(GPT2, 512, trains=True)
    assert flops.flops_per_step(GPT2, 8, 512, trains=True) == 8 * 512 * per_token
    assert flops.flops_per_step(GPT2, 1, 128, trains=False) == 128 * (247_306_752 + 4_718_592)


def test_a_config_of_another_family_has_no_flops():
    class NotGPT2:
        hidden_size = 768

    assert flops.architecture(NotGPT2()) is None


def test_tiny_preset_counts():
    p = PRESETS["tiny"]
    arch = flops.Architecture.from_config(preset_config("tiny"))
    d = p.n_embd
    by_hand = p.vocab_size * d + p.n_layer * (12 * d * d + 13 * d) + 2 * d
    assert arch.n_matmul_params == by_hand == 6_829_696


def test_achieved_tflops_comes_from_the_median_round_as_tokens_per_s_does():
    # 1e12 FLOPs in 0.5, 1.0 and 4.0 s: median 1.0 s, 1 TFLOP/s (the rates' mean would be 1.08)
    assert flops.achieved_tflops(1e12, [0.5, 1.0, 4.0]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("device_name", "row", "bf16"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", "H100 NVL", 835.5),
        ("NVIDIA H200", "H200 SXM", 989.5),
        ("NVIDIA H200 NVL", "H200 NVL", 835.5),
        ("NVIDIA A100-SXM4-40GB", "A100", 312.0),
        ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
        ("NVIDIA A100-PCIE-40GB", "A100", 312.0),
        ("NVIDIA A100 80GB PCIe", "A100", 312.0),
        ("NVIDIA A10G", "A10G", 70.0),
        ("NVIDIA A10", "A10", 125.0),
        ("NVIDIA L4", "L4", 121.0),
        ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090", 165.2),
        ("Tesla T4", "T4", None),  # Turing has no bf16
    ],
)
def test_peak_table_lookup_by_device_name(device_name, row, bf16):
    peak = flops.lookup(device_name)
    assert peak is not None and peak.name == row
    assert peak.tflops.get("bfloat16") == bf16
    assert flops.peak_tflops("cuda:0", device_name, "bfloat16") == bf16


@pytest.mark.parametrize(
    "device_name",
    ["NVIDIA L40S", "NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 4080", "NVIDIA B200", ""],
)
def test_unknown_devices_have_no_peak(device_name):
    assert flops.lookup(device_name) is None
    assert flops.peak_tflops("cuda:0", device_name, "bfloat16") is None


def test_a_cpu_never_has_a_peak_even_with_a_gpu_like_name():
    assert flops.peak_tflops("cpu", "NVIDIA H100 80GB HBM3", "float32") is None


def test_sparse_datasheet_figures_are_halved_and_fp32_is_not():
    h100 = flops.lookup("NVIDIA H100 80GB HBM3")
    assert h100 is not None
    assert h100.tflops == {
        "float32": 67.0,  # CUDA cores: no sparse variant
        "tf32": 494.5,  # 989 with sparsity
        "float16": 989.5,  # 1,979 with sparsity
        "bfloat16": 989.5,
        "int8": 1979.0,  # 3,958 with sparsity
    }
    t4 = flops.lookup("Tesla T4")
    assert t4 is not None and t4.tflops == {"float32": 8.1, "float16": 65.0, "int8": 130.0}


def test_every_row_has_a_source_and_positive_peaks():
    for row in flops.PEAKS:
        assert row.source and row.tflops["float32"] > 0
        assert all(v > 0 for v in row.tflops.values())
        assert set(row.tflops) <= {"float32", "tf32", "float16", "bfloat16", "int8"}


@pytest.mark.parametrize(
    ("precision", "int8", "tf32", "dtype"),
    [
        ("bf16", False, False, "bfloat16"),
        ("fp16", False, True, "float16"),
        ("fp32", False, False, "float32"),
        ("fp32", False, True, "tf32"),
        ("fp32", True, False, "float32"),  # weight-only int8 computes in fp32
    ],
)
def test_compute_dtype(precision, int8, tf32, dtype):
    assert flops.compute_dtype(precision, int8, tf32) == dtype


def test_tf32_follows_torch_settings():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert flops.tf32_matmul() is bool(torch.backends.cuda.matmul.allow_tf32)
        torch.set_float32_matmul_precision("high")
        assert flops.tf32_matmul() is True
    finally:
        torch.set_float32_matmul_precision(before)


def test_flops_metrics_and_mfu():
    info = flops.flops_metrics(2_000_000_000_000, [1.0, 1.0], 400.0)
    assert info == {
        "flops_per_step": 2_000_000_000_000,
        "achieved_tflops": pytest.approx(2.0),
        "mfu": pytest.approx(0.005),
        "peak_tflops": 400.0,
    }
    unknown = flops.flops_metrics(2_000_000_000_000, [1.0], None)
    assert unknown["mfu"] is None and unknown["achieved_tflops"] == pytest.approx(2.0)
    disabled = flops.flops_metrics(2_000_000_000_000, None, 400.0)  # --benchmark-disable
    assert disabled["achieved_tflops"] is None and disabled["mfu"] is None
    other_phase = flops.flops_metrics(None, [1.0], 400.0)
    assert other_phase["flops_per_step"] is None and other_phase["mfu"] is None


def test_parse_peak_tflops():
    assert flops.parse_peak_tflops("989.5") == 989.5
    for bad in ["0", "-1", "nan", "inf", "fast"]:
        with pytest.raises(argparse.ArgumentTypeError):
            flops.parse_peak_tflops(bad)
    assert math.isfinite(flops.parse_peak_tflops("1e3"))


def test_generate_and_distill_flops_by_hand():
    tiny = flops.Architecture(
        n_layer=2, n_head=2, n_embd=128, vocab_size=50257, n_positions=1024, n_inner=512
    )
    n = tiny.n_matmul_params

    def fwd(t):  # 2N + 4*L*d_model*T per token (PaLM appendix B, forward third)
        return 2 * n + 4 * 2 * 128 * t

    # batch 2, prompt 4, 3 new tokens: prefill 4 tokens at T=4, decode at contexts 5 and 6.
    assert flops.generate_flops(tiny, 2, 4, 3) == 2 * (4 * fwd(4) + fwd(5) + fwd(6))
    assert flops.generate_flops(tiny, 1, 4, 1) == 4 * fwd(4)
    teacher = flops.Architecture(
        n_layer=4, n_head=4, n_embd=256, vocab_size=50257, n_positions=1024, n_inner=1024
    )
    t_fwd = 2 * teacher.n_matmul_params + 4 * 4 * 256 * 64
    assert flops.distill_flops(teacher, tiny, 2, 64) == (t_fwd + 3 * fwd(64)) * 2 * 64
