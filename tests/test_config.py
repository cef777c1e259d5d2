"""Presets, optimizations, cases and option parsing: pure data, no model built."""

import argparse

import pytest

from gpt2_fixtures import config
from gpt2_fixtures.config import Case, ModelConfig, Optimization, parse_optimization


def test_presets_have_the_real_gpt2_shapes():
    shapes = {n: (p.n_layer, p.n_head, p.n_embd) for n, p in config.PRESETS.items()}
    assert shapes["gpt2"] == (12, 12, 768)
    assert shapes["distilgpt2"] == (6, 12, 768)
    assert shapes["gpt2-medium"] == (24, 16, 1024)
    assert shapes["gpt2-large"] == (36, 20, 1280)
    assert shapes["gpt2-xl"] == (48, 25, 1600)
    assert all(p.vocab_size == 50257 and p.n_positions == 1024 for p in config.PRESETS.values())


@pytest.mark.parametrize(
    ("text", "rid"),
    [
        ("eager", "eager-fp32"),
        ("sdpa", "sdpa-fp32"),
        ("SDPA-BF16", "sdpa-bf16"),
        ("bf16-eager", "eager-bf16"),
        ("flash2", "flash2-bf16"),
        ("flash2-fp16", "flash2-fp16"),
        ("int8", "sdpa-int8"),
        ("sdpa-compile", "sdpa-fp32-compile"),
        ("compile-bf16", "sdpa-bf16-compile"),
        ("sdpa-bf16-padvocab-fusedadam", "sdpa-bf16-padvocab-fusedadam"),
    ],
)
def test_optimization_ids_are_canonical(text, rid):
    assert parse_optimization(text).id == rid
    assert parse_optimization(rid).id == rid  # an id parses back to itself


@pytest.mark.parametrize("text", ["", "flash3", "sdpa-sdpa", "int8-bf16", "eager-fp64"])
def test_bad_optimizations_raise_one_clear_error(text):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        config.parse_optimizations(text)
    assert "\n" not in str(err.value)


def test_optimizations_list_drops_duplicates_in_order():
    assert [r.id for r in config.parse_optimizations("sdpa,eager,sdpa-fp32")] == [
        "sdpa-fp32",
        "eager-fp32",
    ]


@pytest.mark.parametrize("text", ["0", "-1", "x", "1,,2", "1.5"])
def test_positive_ints_reject_bad_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be >= 1|not a whole number"):
        config.parse_positive_ints(text)


def test_positive_ints_parse():
    assert config.parse_positive_ints("1, 8,32,8") == (1, 8, 32)
    assert config.parse_positive_int("5") == 5
    with pytest.raises(argparse.ArgumentTypeError):
        config.parse_positive_int("1,2")
    assert config.parse_non_negative_int("0") == 0


@pytest.mark.parametrize("text", ["auto", "cpu", "cuda", "cuda:1", "CUDA:0"])
def test_devices_accepted(text):
    assert config.parse_device(text) == text.lower()


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "tpu", "mps"])
def test_devices_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected auto, cpu, cuda or cuda:N"):
        config.parse_device(text)


def test_case_ids_and_grid_order():
    from gpt2_fixtures.bench import phases, settings  # the one grid: phases.grid

    s = settings.resolve(
        device="cpu", optimizations=config.parse_optimizations("eager,sdpa"), batch_sizes=(1, 8),
        seq_lens=(128, 512),
    )  # fmt: skip
    grid = phases.grid("train", s)
    assert not hasattr(config, "build_grid")
    assert [c.id for c in grid][:3] == [
        "eager-fp32-b1-s128",
        "eager-fp32-b1-s512",
        "eager-fp32-b8-s128",
    ]
    assert len(grid) == 8 and len({c.id for c in grid}) == 8
    assert grid[3].tokens == 8 * 512


def test_case_validates():
    with pytest.raises(ValueError, match="unknown phase"):
        Case("fly", Optimization(), 1, 1)
    with pytest.raises(ValueError, match=">= 1"):
        Case("train", Optimization(), 0, 128)


def test_seed_model_config_maps_onto_a_case():
    seed = ModelConfig()
    assert (seed.model_name, seed.batch_size, seed.max_length) == ("gpt2", 8, 128)
    assert seed.case("train").id == "eager-fp32-b8-s128"
    assert ModelConfig(use_quantization=True).optimization().id == "eager-fp16"
    assert ModelConfig(use_flash_attention=True).optimization().id == "flash2-bf16"
    assert (
        ModelConfig(use_flash_attention=True, use_quantization=True).optimization().id
        == "flash2-fp16"
    )


@pytest.mark.parametrize(
    ("parser", "good", "value", "bad"),
    [
        (config.parse_positive_float, "2.5", 2.5, ["0", "-1", "nan", "inf", "x", ""]),
        (config.parse_non_negative_float, "0", 0.0, ["-0.1", "nan", "x"]),
        (config.parse_fraction, "1", 1.0, ["0", "1.5", "-0.5", "nan"]),
        (config.parse_open_fraction, "0.01", 0.01, ["0", "1", "5", "inf"]),
        (config.parse_unit_interval, "0", 0.0, ["-0.1", "1.01", "nan"]),
        (config.parse_percentage, "25%", 0.25, ["25", "0%", "-5%", "x%", "5%%", "nan%"]),
        (config.parse_finite_float, "-3", -3.0, ["inf", "-inf", "nan", "1e999", "three"]),
    ],
)
def test_number_parsers_accept_and_refuse_in_one_line(parser, good, value, bad):
    assert parser(good) == pytest.approx(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError) as err:
            parser(text)
        message = str(err.value)
        assert "\n" not in message and message, (parser.__name__, text)


def test_case_params_are_plain_json_fields():
    case = Case("generate", parse_optimization("sdpa-bf16"), 1, 32, extra=(("n", 16),))
    params = case.params()
    assert params == {
        "phase": "generate",
        "optimization": "sdpa-bf16",
        "batch_size": 1,
        "seq_len": 32,
        "n": 16,
    }
    assert all(isinstance(v, (int, str)) for v in params.values())
