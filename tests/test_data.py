"""The data path: tokenizer, embedded corpus, local text, packing into exact blocks."""

import pytest
from helpers import save_checkpoint

from gpt2_fixtures.bench import data


@pytest.fixture(scope="module")
def tokenizer():
    return data.embedded_tokenizer()


def test_embedded_tokenizer_is_gpt2s_vocabulary(tokenizer):
    assert len(tokenizer) == 50257
    # Token ids of GPT-2's own tokenizer for this text (a known encoding).
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.eos_token_id == 50256


def test_empty_tokenizer_is_refused():
    class Empty:
        name_or_path = "empty"

        def __call__(self, text):
            return {"input_ids": []}

    with pytest.raises(data.DataError, match="encodes 'Hello world' to no tokens"):
        data.check_tokenizer(Empty())


def test_embedded_corpus_is_deterministic():
    first = list(data.embedded_corpus_lines(50, seed=0))
    assert first == list(data.embedded_corpus_lines(50, seed=0))
    assert first != list(data.embedded_corpus_lines(50, seed=1))
    assert sum(line.count(".") for line in first) == 50


def test_blocks_have_exactly_seq_len_tokens(tokenizer):
    blocks = data.pack_blocks(data.load_text("embedded"), tokenizer, 128)
    assert blocks.ndim == 2 and blocks.shape[1] == 128
    assert blocks.shape[0] > 1000  # enough for batch 32 x 1024 on a GPU run as well
    assert int(blocks.max()) < 50257 and int(blocks.min()) >= 0
    assert (blocks == tokenizer.eos_token_id).any()  # documents are separated


def test_local_text_file_and_folder(tmp_path, tokenizer):
    text = "\n".join(f"Line {i} of a small local corpus for the benchmark." for i in range(200))
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text(text)
    one = data.pack_blocks(data.load_text(str(tmp_path / "a.txt")), tokenizer, 32)
    both = data.pack_blocks(data.load_text(str(tmp_path)), tokenizer, 32)
    assert one.shape[1] == both.shape[1] == 32
    assert both.shape[0] >= 2 * one.shape[0]


def test_missing_path_gives_one_clear_line(tmp_path):
    with pytest.raises(data.DataError, match="does not exist; expected embedded, wikitext-2"):
        data.load_text(str(tmp_path / "nope.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="holds no"):
        data.load_text(str(tmp_path / "empty"))


def test_too_small_dataset_names_the_sizes(tmp_path, tokenizer):
    (tmp_path / "small.txt").write_text("A few words only, repeated twice. " * 8)
    blocks = data.pack_blocks(data.load_text(str(tmp_path / "small.txt")), tokenizer, 16)
    with pytest.raises(data.DataError, match=r"batch size 64 needs 64 blocks \(1024 tokens\)"):
        data.take_batch(blocks, 64, "small.txt")
    with pytest.raises(data.DataError, match="fewer than 4096 tokens"):
        data.pack_blocks(data.load_text(str(tmp_path / "small.txt")), tokenizer, 4096)


def test_take_batch_is_a_copy(tokenizer):
    blocks = data.pack_blocks(data.load_text("embedded"), tokenizer, 64)
    batch = data.take_batch(blocks, 4, "embedded")
    assert batch.shape == (4, 64)
    batch[0, 0] = -1
    assert int(blocks[0, 0]) != -1


def test_embedded_corpus_is_written_by_the_one_atomic_writer(tmp_path, monkeypatch):
    """results.files.atomic_write_text (fsync, 0644), not a copy that left files 0600."""
    from gpt2_fixtures.results import files

    monkeypatch.setenv("GPT2_BENCH_CACHE", str(tmp_path))
    written = []
    monkeypatch.setattr(data, "atomic_write_text", lambda p, text: written.append(p))
    assert data.atomic_write_text is not files.atomic_write_text  # patched: the real one below
    data.embedded_corpus_path()
    assert written == [tmp_path / f"embedded-corpus-{data.CORPUS_VERSION}.txt"]
    monkeypatch.undo()
    monkeypatch.setenv("GPT2_BENCH_CACHE", str(tmp_path))
    assert data.atomic_write_text is files.atomic_write_text
    path = data.embedded_corpus_path()
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


# -- which tokenizer -------------------------------------------------------------------------
def test_checkpoint_without_tokenizer_files_gets_the_embedded_bpe(tiny_checkpoint):
    from gpt2_fixtures.bench import settings
    from gpt2_fixtures.bench.workbench import Workbench

    assert not data.has_tokenizer_files(tiny_checkpoint)
    s = settings.resolve(device="cpu", model=str(tiny_checkpoint), seq_lens=(16,))
    assert s.tokenizer.source == "embedded"
    assert "has no tokenizer files" in s.tokenizer.why and "50257" in s.tokenizer.why
    assert "tokenizer=embedded (GPT-2's BPE" in s.header()
    bench = Workbench(s)
    assert bench.blocks(16).shape[1] == 16  # no "encodes 'Hello world' to no tokens"


def test_checkpoint_with_another_vocabulary_names_the_option(tmp_path):
    spec_dir = save_checkpoint(tmp_path, vocab_size=1000)
    from gpt2_fixtures.bench import models

    spec = models.resolve_model(str(spec_dir))
    with pytest.raises(data.DataError, match=r"vocabulary of 1000.*--gpt2-tokenizer") as err:
        data.choose_tokenizer(None, spec, 1000)
    assert "\n" not in str(err.value)


def test_the_models_own_tokenizer_wins_and_the_option_overrides_it(tiny_checkpoint, tokenizer):
    from gpt2_fixtures.bench import models

    directory = tiny_checkpoint
    tokenizer.save_pretrained(directory)
    spec = models.resolve_model(str(directory))
    own = data.choose_tokenizer(None, spec, 50257)
    assert own.source == str(directory) and own.why == "the model's own"
    assert data.load_tokenizer(own)("Hello world")["input_ids"] == [15496, 995]
    assert data.choose_tokenizer("embedded", spec, 50257).source == "embedded"
    assert data.choose_tokenizer(str(directory), models.resolve_model("tiny"), 50257).source == (
        str(directory)
    )
    assert data.choose_tokenizer(None, models.resolve_model("tiny"), 50257) == data.EMBEDDED


def test_a_tokenizer_path_that_is_not_one_is_one_line(tmp_path):
    from gpt2_fixtures.bench import models

    tiny = models.resolve_model("tiny")
    with pytest.raises(data.DataError, match="is not a directory"):
        data.choose_tokenizer(str(tmp_path / "missing"), tiny, 50257)
    with pytest.raises(data.DataError, match=r"has none of tokenizer\.json"):
        data.choose_tokenizer(str(tmp_path), tiny, 50257)
    assert data.choose_tokenizer("org/tok", tiny, 50257).source == "org/tok"  # a hub id


def test_resolve_takes_the_tokenizer_option(tmp_path):
    from gpt2_fixtures.bench import settings

    s = settings.resolve(device="cpu", tokenizer="embedded")
    assert s.tokenizer.source == "embedded" and "--gpt2-tokenizer" in s.tokenizer.why


def test_machine_info_records_the_tokenizer_when_told():
    from gpt2_fixtures.bench.environment import environment

    assert "tokenizer" not in environment("cpu")
    assert environment("cpu", tokenizer="embedded")["tokenizer"] == "embedded"
