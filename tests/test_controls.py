"""The control workloads: the GPT-2 twin computes GPT-2's forward; sizes depend on the case only."""

import types

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2_fixtures.bench import controls, phases
from gpt2_fixtures.config import Case, parse_optimizations

SMALL = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)


def case(phase: str, batch: int = 2, seq: int = 8) -> Case:
    return Case(phase, parse_optimizations("sdpa-fp32")[0], batch, seq)


def test_twin_shape_follows_the_config_and_the_phase():
    shape = controls.twin_shape(SMALL, "train", 2, 8, 16)
    assert shape == controls.TwinShape(64, 16, 2, 1, 32, 2, 8, "train", 0)
    assert shape.kind == "twin-train"
    assert phases.DISTILL.twin == "train"  # the student's training step
    assert controls.twin_shape(SMALL, "infer", 2, 8, 16).kind == "twin-infer"
    # generation: tokens = batch x new tokens; the prefill makes the first one
    gen = controls.twin_shape(SMALL, "generate", 2, 8, 2 * 5)
    assert (gen.twin, gen.decode_steps) == ("generate", 4)


def test_twin_shape_refuses_what_is_not_gpt2_shaped():
    assert controls.twin_shape(None, "train", 2, 8, 16) is None
    assert controls.twin_shape(types.SimpleNamespace(n_embd=16), "train", 2, 8, 16) is None
    assert controls.twin_shape(SMALL, "train", 2, 64, 128) is None  # beyond n_positions
    assert controls.twin_shape(SMALL, "bogus", 2, 8, 16) is None


def test_twin_forward_is_gpt2_forward():
    """With GPT-2's weights loaded, the twin's logits are transformers' logits: it does the
    step's work, not something merely as long."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(SMALL).eval()
    twin = controls.TwinControl(controls.twin_shape(SMALL, "infer", 2, 8, 16), "cpu", torch.float32)
    h = model.transformer.h[0]
    conv1d = {"qkv": h.attn.c_attn, "proj": h.attn.c_proj}
    conv1d |= {"fc": h.mlp.c_fc, "fc_proj": h.mlp.c_proj}
    with torch.no_grad():
        twin.net.wte.copy_(model.transformer.wte.weight)
        twin.net.wpe.copy_(model.transformer.wpe.weight)
        for key, layer in conv1d.items():  # Conv1D keeps its weight as (in, out)
            twin.net.linear[key].weight.copy_(layer.weight.T)
            twin.net.linear[key].bias.copy_(layer.bias)
        expected = model(input_ids=twin.ids).logits
        got = twin.net(twin.ids)
    assert got.shape == (2, 8, 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("phase", "dtype"),
    [
        ("infer", torch.float32),
        ("train", torch.float32),
        ("generate", torch.float32),
        ("train", torch.bfloat16),
        ("infer", torch.bfloat16),
    ],
)
def test_twin_runs_every_phase_without_changing_its_weights(phase, dtype):
    shape = controls.twin_shape(SMALL, phase, 2, 8, 2 * 3)
    twin = controls.TwinControl(shape, "cpu", dtype)
    before = {k: v.detach().clone() for k, v in twin.net.named_parameters()}
    assert twin.run() > 0 and twin.run() > 0
    for key, value in twin.net.named_parameters():  # AdamW at lr 0: the same work every round
        assert torch.equal(value, before[key]), key
        assert value.grad is None
    assert twin.net.head.weight is twin.net.wte  # tied, as GPT-2's
    seeded = controls.TwinControl(shape, "cpu", dtype)
    assert torch.equal(seeded.ids, twin.ids)
    assert torch.equal(seeded.net.linear["qkv"].weight, before["linear.qkv.weight"])


def test_control_for_picks_the_twin_of_the_model():
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=3, n_head=2)
    )
    control = controls.control_for(model, "cpu", case("train"), 16, 1000, twin="train")
    assert isinstance(control, controls.TwinControl) and control.kind == "twin-train"
    assert control.shape.layers == 3
    assert control.net.wte.dtype == torch.float32
    # the optimization's compute dtype, whatever the weights are kept in (autocast keeps them fp32)
    bf16 = Case("train", parse_optimizations("sdpa-bf16")[0], 2, 8)
    assert (
        controls.control_for(model, "cpu", bf16, 16, 1000, twin="train").net.wte.dtype
        == torch.bfloat16
    )


def test_int8_twin_runs_torch_dynamic_int8_linears():
    model = GPT2LMHeadModel(SMALL)
    int8 = Case("infer", parse_optimizations("sdpa-int8")[0], 2, 8)
    control = controls.control_for(model, "cpu", int8, 16, 1000)
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(control.net.linear["qkv"], quantized)
    assert isinstance(control.net.head, quantized) and control.net.wte.dtype == torch.float32
    assert control.run() > 0
    fp32 = controls.control_for(model, "cpu", case("infer"), 16, 1000)
    assert isinstance(fp32.net.linear["qkv"], torch.nn.Linear)


def test_control_for_falls_back_to_the_matmul_loop():
    control = controls.control_for(torch.nn.Linear(4, 4), "cpu", case("infer"), 16, 1000)
    assert isinstance(control, controls.MatmulControl) and control.kind == "matmul"
    gpt2 = GPT2LMHeadModel(SMALL)
    asked = controls.control_for(gpt2, "cpu", case("infer"), 16, 1000, kind="matmul")
    assert isinstance(asked, controls.MatmulControl)
    with pytest.raises(ValueError, match="control 'sleep': expected one of twin, matmul"):
        controls.control_for(gpt2, "cpu", case("infer"), 16, 1000, kind="sleep")


def test_matmul_control_size_depends_only_on_the_case():
    small = controls.MatmulControl("cpu", step_flops=1e6)
    big = controls.MatmulControl("cpu", step_flops=1e15)
    mid = controls.MatmulControl("cpu", step_flops=4 * 20 * 2 * 384**3)
    assert (small.repeats, big.repeats, mid.repeats) == (16, 64, 20)
    assert torch.equal(small.a, big.a)  # seeded: the same matrices every run
    assert small.run() > 0


def test_approx_step_flops():
    assert controls.approx_step_flops(100, 10, trains=False) == 2000
    assert controls.approx_step_flops(100, 10, trains=True) == 6000
