"""The data path: tokenizer, embedded corpus, local text, packing into exact blocks."""

import pytest

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


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"
    data.atomic_write_text(target, "complete")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
