"""Distillation phase: the KD loss by hand, options, the step on micro models, the teacher slot."""

import argparse
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import run

from gpt2_fixtures.bench import distill, models, phases, settings
from gpt2_fixtures.bench.workbench import Workbench
from gpt2_fixtures.config import Case, parse_optimization

SDPA = parse_optimization("sdpa")


def softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


# -- the loss ----------------------------------------------------------------------------------
def test_kd_loss_matches_a_hand_computation_with_temperature_and_padding():
    student = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [9.0, -9.0, 0.0]]
    teacher = [[0.0, 1.0, 2.0], [0.0, 0.0, 3.0], [-9.0, 9.0, 0.0]]
    t = 2.0
    by_hand = [
        kl(softmax([x / t for x in tt]), softmax([x / t for x in ss]))
        for ss, tt in zip(student, teacher, strict=True)
    ]
    # The third position is padding: it must not count, though its KL is by far the largest.
    expected = t * t * (by_hand[0] + by_hand[1]) / 2
    got = distill.kd_loss(
        torch.tensor([student]), torch.tensor([teacher]), t, torch.tensor([[1, 1, 0]])
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert by_hand[2] > 10 * max(by_hand[:2])
    everything = distill.kd_loss(torch.tensor([student]), torch.tensor([teacher]), t)
    assert everything.item() == pytest.approx(t * t * sum(by_hand) / 3, rel=1e-5)


def test_kd_loss_is_zero_for_equal_logits_and_works_in_half_precision():
    logits = torch.randn(2, 4, 11)
    assert distill.kd_loss(logits, logits.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    half = distill.kd_loss(logits.bfloat16(), (logits * 2).bfloat16(), 2.0)
    assert half.dtype == torch.float32 and math.isfinite(half.item())


def test_kd_loss_gradient_is_t_times_q_minus_p_and_tends_to_the_logit_difference():
    # d(T^2 KL(p||q))/dz_s = T (q - p) with p = softmax(z_t/T), q = softmax(z_s/T); for large T,
    # zero-mean logits give (z_s - z_t) / N (Hinton et al. 2015, section 2.1): the T^2 factor
    # keeps the soft targets' gradient from vanishing as T grows.
    z_t = torch.tensor([[[0.0, 1.0, -1.0]]])
    z_s = torch.tensor([[[1.0, -0.5, -0.5]]], requires_grad=True)
    distill.kd_loss(z_s, z_t, 2.0).backward()
    q, p = torch.softmax(z_s.detach() / 2, -1), torch.softmax(z_t / 2, -1)
    assert torch.allclose(z_s.grad, 2 * (q - p), atol=1e-6)
    z_s.grad = None
    distill.kd_loss(z_s, z_t, 1000.0).backward()  # float32 softmax: 1e-3 is its precision here
    assert torch.allclose(z_s.grad, (z_s.detach() - z_t) / 3, atol=1e-3)


def test_lm_labels_ignore_padding():
    ids = torch.tensor([[5, 6, 7, 0]])
    assert distill.lm_labels(ids, None) is ids
    assert distill.lm_labels(ids, torch.tensor([[1, 1, 1, 0]])).tolist() == [[5, 6, 7, -100]]


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [("2", 2.0), ("0.5", 0.5)])
def test_parse_temperature(text, value):
    assert distill.parse_temperature(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "inf", "nan", "warm"])
def test_parse_temperature_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        distill.parse_temperature(text)


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("0.5", 0.5), ("1", 1.0)])
def test_parse_alpha(text, value):
    assert distill.parse_alpha(text) == value


@pytest.mark.parametrize("text", ["-0.1", "1.5", "nan", "half"])
def test_parse_alpha_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 1\]|not a (finite )?number"):
        distill.parse_alpha(text)


def test_resolve_options_device_defaults():
    grid = ((1, 4), (64, 256))
    cpu = distill.resolve_options("cpu", "auto", None, None, None, None, None, None, grid)
    assert (cpu.teacher.name, cpu.student.name) == ("tiny-teacher", "tiny")
    assert (cpu.temperature, cpu.alpha) == (2.0, 0.5)
    assert (cpu.batch_sizes, cpu.seq_lens) == ((2,), (64,))
    assert not cpu.teacher.pretrained and not cpu.student.pretrained
    cuda = distill.resolve_options("cuda", "auto", None, None, None, None, None, None, grid)
    assert (cuda.teacher.name, cuda.student.name) == ("gpt2", "distilgpt2")
    assert (cuda.batch_sizes, cuda.seq_lens) == grid


def test_resolve_options_explicit_values_and_errors():
    opts = distill.resolve_options(
        "cpu", "auto", "gpt2", "tiny", 4.0, 0.9, (8,), (128,), ((1,), (64,))
    )
    assert (opts.teacher.name, opts.temperature, opts.alpha) == ("gpt2", 4.0, 0.9)
    assert (opts.batch_sizes, opts.seq_lens) == ((8,), (128,))
    assert "teacher=gpt2 student=tiny T=4 alpha=0.9" in opts.header()
    with pytest.raises(ValueError, match="n_positions=1024"):
        distill.resolve_options("cpu", "auto", None, None, None, None, None, (2048,), ((1,), (1,)))
    with pytest.raises(models.ModelError, match="unknown"):
        distill.resolve_options(
            "cpu", "random", "no-such", None, None, None, None, None, ((1,), (1,))
        )


def test_check_pair_needs_one_vocabulary():
    distill.check_pair(SimpleNamespace(vocab_size=7), SimpleNamespace(vocab_size=7), "t", "s")
    with pytest.raises(ValueError, match="same vocabulary"):
        distill.check_pair(SimpleNamespace(vocab_size=7), SimpleNamespace(vocab_size=8), "t", "s")


def test_grid_ids():
    opts = distill.resolve_options(
        "cpu", "auto", None, None, None, None, (1, 2), (16,), ((1,), (1,))
    )
    assert [c.id for c in distill.grid([SDPA], opts)] == ["sdpa-fp32-b1-s16", "sdpa-fp32-b2-s16"]


# -- teacher share -----------------------------------------------------------------------------
def test_teacher_share_arithmetic():
    assert distill.teacher_share(0.25, 1.0) == 0.25
    with pytest.raises(ValueError):
        distill.teacher_share(2.0, 1.0)
    with pytest.raises(ValueError):
        distill.teacher_share(0.0, 0.0)
    m = distill.share_metrics([0.2, 0.4])
    assert m["teacher_share"] == pytest.approx(0.3)
    assert m["teacher_share_std"] == pytest.approx(math.sqrt(0.02))
    assert distill.share_metrics([]) == {"teacher_share": None, "teacher_share_std": None}


# -- the step on micro models ------------------------------------------------------------------
def micro(n_layer, n_embd, seed):
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=2, n_embd=n_embd, n_positions=32, vocab_size=53)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


@pytest.fixture
def pair():
    return micro(1, 16, 0).train(), micro(2, 32, 1).eval()


def test_step_trains_the_student_only_and_records_its_parts(pair):
    student, teacher = pair
    before_s = [p.detach().clone() for p in student.parameters()]
    before_t = [p.detach().clone() for p in teacher.parameters()]
    d = distill.Distiller(student, teacher, SDPA, "cpu", temperature=2.0, alpha=0.25)
    d.step(torch.randint(0, 53, (2, 12), generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(before_t, teacher.parameters(), strict=True))
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before_s, student.parameters(), strict=True))
    state = d.state
    assert state.loss() == pytest.approx(0.25 * state.kd_loss() + 0.75 * state.lm_loss(), rel=1e-5)
    assert state.kd_loss() > 0 and state.lm_loss() > 0
    shares = d.teacher_shares()
    assert len(shares) == 1 and 0 < shares[0] < 1


def test_alpha_one_skips_the_lm_loss(pair):
    d = distill.Distiller(*pair, SDPA, "cpu", temperature=1.0, alpha=1.0)
    d.step(torch.randint(0, 53, (1, 8), generator=torch.Generator().manual_seed(0)))
    assert d.state.lm_loss() is None and d.state.loss() == pytest.approx(d.state.kd_loss())


def test_padding_changes_nothing(pair):
    student, teacher = pair
    student.eval()  # no dropout: the two losses must be equal
    ids = torch.randint(0, 53, (1, 10), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([ids, torch.full((1, 5), 52)], dim=1)  # right padding, causal model
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        plain = distill.distillation_loss(student, ids, None, teacher(ids).logits, 2.0, 0.5)
        t_pad = teacher(padded, attention_mask=mask).logits
        pad = distill.distillation_loss(student, padded, mask, t_pad, 2.0, 0.5)
    assert pad.kd.item() == pytest.approx(plain.kd.item(), rel=1e-4)
    assert pad.lm.item() == pytest.approx(plain.lm.item(), rel=1e-4)


# -- the workbench's teacher slot --------------------------------------------------------------
def test_workbench_holds_the_teacher_beside_the_student_and_frees_both():
    s = settings.resolve(device="cpu", teacher="tiny", student="tiny", seq_lens=(16,))
    bench = Workbench(s)
    case = Case("distill", SDPA, 1, 16)
    student, teacher = bench.model(case), bench.teacher(case)
    assert student is not teacher and bench.teacher(case) is teacher
    assert student.training and not teacher.training
    keys = bench.describe(case, models.n_params(student))
    assert (keys["teacher"], keys["student"], keys["model"]) == ("tiny", "tiny", "tiny")
    assert (keys["temperature"], keys["alpha"]) == (2.0, 0.5)
    del student, teacher
    bench.model(Case("infer", SDPA, 1, 16))  # another phase: one model, the teacher is gone
    assert bench._teacher is None
    bench.free_model()


def test_distill_optimizations_follow_the_training_rules():
    # The teacher runs the same attention/precision/compile, so the distill phase's own checks
    # cover it; int8 has no optimizer step and fusedadam only touches the student's.
    s = settings.resolve(device="cpu", teacher="tiny", student="tiny")

    def reason(optimization):
        return phases.skip_reason(Case("distill", parse_optimization(optimization), 1, 16), s)

    assert "fp16" in reason("sdpa-fp16") and "int8" in reason("int8")
    assert reason("sdpa-fusedadam") is None


# -- the options through the plugin ------------------------------------------------------------


def test_options_reach_the_header(bench_dir):
    result = run(
        bench_dir,
        "--collect-only",
        *("--gpt2-teacher", "tiny", "--gpt2-kd-temperature", "3", "--gpt2-kd-alpha", "0.7"),
        *("--gpt2-prompt-lens", "16", "--gpt2-new-tokens", "8"),
    )
    result.stdout.fnmatch_lines(
        [
            "*generate: prompt_lens=16 new_tokens=8*",
            "*distill: teacher=tiny student=tiny T=3 alpha=0.7*",
        ]
    )


def test_bad_alpha_is_a_usage_error(bench_dir):
    result = run(bench_dir, "--collect-only", "--gpt2-kd-alpha", "1.5")
    assert result.ret == 4  # pytest's usage error
    result.stderr.fnmatch_lines(["*--gpt2-kd-alpha*must be in [[]0, 1]*"])


# -- a local pretrained checkpoint under test --------------------------------------------------
def test_preset_pair_is_built_from_configs_beside_a_local_pretrained_model(tiny_checkpoint):
    """`--gpt2-model ./my-gpt2 --gpt2-weights pretrained` is about the model under test: the
    preset teacher and student are still built offline (the hub has no `tiny`)."""
    s = settings.resolve(
        device="cpu", model=str(tiny_checkpoint), weights="pretrained", batch_sizes=(1,),
        seq_lens=(16,),
    )  # fmt: skip
    assert s.weights == "pretrained" and s.distill is not None
    pair = (s.distill.teacher, s.distill.student)
    assert [(m.source, m.pretrained) for m in pair] == [("preset", False)] * 2
    bench = Workbench(s)
    case = phases.DISTILL.grid(s)[0]
    try:
        student, teacher = bench.model(case), bench.teacher(case)
        assert models.n_params(teacher) > models.n_params(student)
    finally:
        bench.free_model()
