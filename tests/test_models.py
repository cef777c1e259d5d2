"""Building models: presets offline, pretrained from a local directory, clear errors."""

import pytest
import torch

from gpt2_fixtures.bench import models
from gpt2_fixtures.config import Optimization


def test_gpt2_preset_has_124m_parameters_with_tied_embeddings():
    spec = models.resolve_model("gpt2", "random")
    with torch.device("meta"):
        model = models.build(spec, Optimization(), models.model_config(spec))
    assert models.n_params(model) == 124_439_808


def test_resolve_model_sources(tmp_path):
    assert models.resolve_model("tiny").source == "preset"
    assert not models.resolve_model("tiny").pretrained
    assert models.resolve_model("gpt2", "pretrained") == models.ModelSpec("gpt2", "preset", True)
    assert models.resolve_model("openai-community/gpt2").source == "hub"
    assert models.resolve_model(str(tmp_path)).source == "path"


@pytest.mark.parametrize(
    ("name", "weights", "message"),
    [
        ("gpt5", "random", "unknown preset 'gpt5' with --gpt2-weights random"),
        ("./missing/model.bin", "auto", "does not exist"),
        ("a/b/c", "auto", "unknown model 'a/b/c'"),
    ],
)
def test_resolve_model_errors(name, weights, message):
    with pytest.raises(models.ModelError, match=message):
        models.resolve_model(name, weights)


def test_pretrained_from_a_local_directory(tmp_path):
    """The real from_pretrained path, on a directory written by save_pretrained."""
    spec = models.resolve_model("tiny", "random")
    config = models.model_config(spec)
    original = models.build(spec, Optimization(attention="eager"), config).eval()
    original.save_pretrained(tmp_path)

    local = models.resolve_model(str(tmp_path))
    assert local.pretrained and local.source == "path"
    loaded = models.build(local, Optimization(attention="sdpa"), models.model_config(local))
    assert loaded.config._attn_implementation == "sdpa"
    loaded.eval()  # from_pretrained already is; dropout off in both
    batch = torch.arange(16).unsqueeze(0)
    with torch.no_grad():
        expected = original(batch).logits
        got = loaded(batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_local_directory_without_config_is_one_line(tmp_path):
    spec = models.resolve_model(str(tmp_path))
    with pytest.raises(models.ModelError, match=r"has no usable config\.json"):
        models.model_config(spec)


def test_random_weights_are_seeded():
    spec = models.resolve_model("tiny", "random")
    config = models.model_config(spec)
    a = models.build(spec, Optimization(), config)
    b = models.build(spec, Optimization(), config)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_release_frees_what_the_caller_no_longer_holds():
    """release() cannot drop a caller's references (the old release(*objects) pretended to):
    the caller deletes its own, release() collects what is left, cycles included."""
    import weakref

    model = torch.nn.Linear(4, 4)
    model.cycle = [model]  # only the cycle collector frees it
    ref = weakref.ref(model)
    with pytest.raises(TypeError):
        models.release(model)  # type: ignore[call-arg]
    del model
    models.release()
    assert ref() is None


def test_unknown_model_with_the_hub_offline_names_every_source(monkeypatch):
    from gpt2_fixtures.bench import hub, settings
    from gpt2_fixtures.config import PRESETS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(hub.HubUnavailableError) as err:
            settings.resolve(device="cpu", model="gpt5")
    finally:
        hub.hub_reachable.cache_clear()
    message = str(err.value)
    assert (
        "'gpt5' is neither a preset (" + ", ".join(PRESETS) + ") nor a local directory" in message
    )
    assert "nor in the local hub cache (hub offline" in message and "\n" not in message
    assert "--gpt2-dataset" not in message and "text file" not in message
