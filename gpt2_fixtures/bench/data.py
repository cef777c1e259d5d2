"""Tokenizer and data: text -> tokenizer -> blocks of exactly ``seq_len`` tokens, via ``datasets``.

One code path serves the embedded corpus, a local text file or folder, and WikiText-2 from the
hub: ``load_dataset("text" | "Salesforce/wikitext")`` then ``Dataset.map`` to tokenize and to
pack, as in transformers' ``examples/pytorch/language-modeling/run_clm.py`` (``group_texts``).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpt2_fixtures.bench import hub
from gpt2_fixtures.bench.errors import first_line
from gpt2_fixtures.config import GPT2_VOCAB_SIZE
from gpt2_fixtures.results.files import atomic_write_text

DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # gpt2_fixtures/data/
TOKENIZER_DIR = DATA_DIR / "gpt2-tokenizer"
WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
CORPUS_VERSION = "v1"
CORPUS_SENTENCES = 12000  # about 200k GPT-2 tokens: enough for batch 32 x 1024 several times


class DataError(ValueError):
    """Bad data source or a dataset too small for the case; the message is one line."""


def cache_dir() -> Path:
    root = os.environ.get("GPT2_BENCH_CACHE") or Path.home() / ".cache" / "gpt2-bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# Tokenizer


def embedded_tokenizer() -> Any:
    """GPT-2's own byte-level BPE (50,257 tokens), from files shipped in the package.

    Built from ``vocab=``/``merges=`` paths: in transformers 5.x the ``vocab_file=``/
    ``merges_file=`` keywords are ignored and give an empty tokenizer.
    """
    from transformers import GPT2Tokenizer

    tok = GPT2Tokenizer(
        vocab=str(TOKENIZER_DIR / "vocab.json"), merges=str(TOKENIZER_DIR / "merges.txt")
    )
    tok.name_or_path = "gpt2-bench/embedded"
    return check_tokenizer(tok)


def check_tokenizer(tok: Any) -> Any:
    ids = tok("Hello world")["input_ids"]
    if not ids:
        raise DataError(f"tokenizer {tok.name_or_path!r} encodes 'Hello world' to no tokens")
    return tok


@dataclass(frozen=True)
class TokenizerChoice:
    """What tokenizes the text: ``source`` is ``embedded``, a local directory or a hub id;
    ``why`` says how it was chosen (the run header prints it; ``extra_info["tokenizer"]`` is
    ``source``)."""

    source: str
    why: str

    def header(self) -> str:
        return f"{self.source} ({self.why})"


EMBEDDED = TokenizerChoice("embedded", "GPT-2's byte-level BPE, shipped in the package")
# Files that hold a tokenizer's vocabulary (fast tokenizer, GPT-2 BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model")
TOKENIZER_OPTION = "--gpt2-tokenizer embedded|HUB_ID|PATH"


def has_tokenizer_files(directory: str | Path) -> bool:
    return any((Path(directory) / name).is_file() for name in TOKENIZER_FILES)


def choose_tokenizer(requested: str | None, model: Any, vocab_size: int) -> TokenizerChoice:
    """``--gpt2-tokenizer`` as given, else the model's own tokenizer where it has one, else the
    embedded GPT-2 BPE when the model's vocabulary is GPT-2's. ``model`` is a ModelSpec."""
    if requested is not None:
        return _requested_tokenizer(requested)
    if model.source == "hub" or (model.source == "preset" and model.pretrained):
        return TokenizerChoice(model.load_from, "the model's own, from the hub or its cache")
    if model.source == "preset":
        return EMBEDDED
    if has_tokenizer_files(model.load_from):
        return TokenizerChoice(model.load_from, "the model's own")
    if vocab_size == GPT2_VOCAB_SIZE:
        return TokenizerChoice(
            "embedded",
            f"GPT-2's BPE: {model.name} has no tokenizer files and GPT-2's vocabulary of "
            f"{GPT2_VOCAB_SIZE}",
        )
    raise DataError(
        f"model directory {model.name!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)}) "
        f"and a vocabulary of {vocab_size}, not GPT-2's {GPT2_VOCAB_SIZE}: name its tokenizer "
        f"with {TOKENIZER_OPTION}"
    )


def _requested_tokenizer(requested: str) -> TokenizerChoice:
    if requested == "embedded":
        return TokenizerChoice("embedded", f"GPT-2's BPE, as {TOKENIZER_OPTION.split()[0]} says")
    path = Path(requested).expanduser()
    if path.is_dir():
        if not has_tokenizer_files(path):
            raise DataError(
                f"--gpt2-tokenizer {requested!r}: the directory has none of "
                f"{', '.join(TOKENIZER_FILES)}"
            )
        return TokenizerChoice(str(path), "--gpt2-tokenizer")
    if requested.startswith((".", "/", "~")) or path.exists():
        raise DataError(
            f"--gpt2-tokenizer {requested!r} is not a directory; expected embedded, a hub id or "
            "a directory with tokenizer files"
        )
    return TokenizerChoice(requested, "--gpt2-tokenizer, from the hub or its cache")


def load_tokenizer(choice: TokenizerChoice) -> Any:
    """The chosen tokenizer, checked to encode text (an empty one would give no blocks)."""
    if choice.source == "embedded":
        return embedded_tokenizer()
    from transformers import AutoTokenizer

    local = Path(choice.source).is_dir()
    try:
        tok = AutoTokenizer.from_pretrained(
            choice.source, local_files_only=local or hub.local_files_only(), trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        if local:
            raise DataError(
                f"cannot load the tokenizer in {choice.source!r}: {first_line(exc)}; choose one "
                f"with {TOKENIZER_OPTION}"
            ) from None
        raise hub.explain("tokenizer", choice.source, exc) from None
    return check_tokenizer(tok)


# ---------------------------------------------------------------------------------------------
# Embedded corpus: written by this project, generated deterministically (no third-party prose).

_SUBJECTS = (
    "the engineer",
    "a small team",
    "the compiler",
    "our scheduler",
    "the old server",
    "a careful reviewer",
    "the new kernel",
    "the training job",
    "every worker",
    "the profiler",
    "a patient student",
    "the research group",
    "the runner",
    "the cache",
    "this benchmark",
)
_VERBS = (
    "measures",
    "rewrites",
    "inspects",
    "schedules",
    "compares",
    "records",
    "explains",
    "repeats",
    "reduces",
    "tracks",
    "allocates",
    "releases",
    "predicts",
    "tokenizes",
    "copies",
)
_OBJECTS = (
    "the memory peak",
    "each batch",
    "a long sequence",
    "the attention scores",
    "the gradients",
    "a noisy timer",
    "the baseline file",
    "the loss curve",
    "every layer",
    "the vocabulary",
    "a matrix product",
    "the warmup rounds",
    "the median time",
    "a regression",
    "the results",
)
_CLAUSES = (
    "before the next round begins",
    "while the device stays busy",
    "after the warmup ends",
    "because the numbers must be honest",
    "when the batch grows",
    "so that nothing is lost",
    "even on a crowded machine",
    "without touching the network",
    "in half the usual time",
    "as the sequence gets longer",
    "until the cache is warm",
    "for every optimization",
)
_OPENERS = ("", "", "", "Later, ", "Meanwhile, ", "In practice, ", "On Monday, ", "Then ")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.6:
        words.append(rng.choice(_CLAUSES))
    text = rng.choice(_OPENERS) + " ".join(words)
    number = f" {rng.randint(2, 4096)} times" if rng.random() < 0.2 else ""
    return text[0].upper() + text[1:] + number + "."


def embedded_corpus_lines(n_sentences: int = CORPUS_SENTENCES, seed: int = 0) -> Iterator[str]:
    """Paragraphs of 3-8 generated sentences; the same text on every machine and Python."""
    rng = random.Random(seed)
    written = 0
    while written < n_sentences:
        k = min(rng.randint(3, 8), n_sentences - written)
        yield " ".join(_sentence(rng) for _ in range(k))
        written += k


def embedded_corpus_path() -> Path:
    path = cache_dir() / f"embedded-corpus-{CORPUS_VERSION}.txt"
    if not path.exists():
        atomic_write_text(path, "\n".join(embedded_corpus_lines()) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Text datasets


def text_files(source: str) -> list[str]:
    path = Path(source).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.txt") if p.is_file())
        if files:
            return files
        raise DataError(f"dataset directory {source!r} holds no *.txt files")
    raise DataError(
        f"dataset {source!r} does not exist; expected embedded, wikitext-2, "
        "or the path of a text file or a folder of *.txt files"
    )


def load_text(source: str) -> Any:
    """A ``datasets.Dataset`` with one ``text`` column, whatever the source."""
    import datasets

    datasets.disable_progress_bars()  # the console is for results
    if source == "wikitext-2":
        hub.datasets_offline_if_unreachable()  # no 23 s retry loop without a network
        try:
            return datasets.load_dataset(*WIKITEXT, split="train")
        except Exception as exc:  # the hub raises many types: all mean "not available here"
            raise hub.explain("dataset", "/".join(WIKITEXT), exc) from None
    files = [str(embedded_corpus_path())] if source == "embedded" else text_files(source)
    return datasets.load_dataset("text", data_files=files, split="train")


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def pack_blocks(text_ds: Any, tokenizer: Any, seq_len: int) -> torch.Tensor:
    """Tokenize every non-empty line, end it with EOS, concatenate, cut into ``seq_len`` blocks.

    The remainder shorter than ``seq_len`` is dropped (run_clm.py's ``group_texts``), so every
    block is exactly ``seq_len`` tokens. Explicit fingerprints let ``datasets`` reuse its cache
    without hashing the tokenizer object.
    """
    eos = tokenizer.eos_token_id
    tok_key = (tokenizer.name_or_path, len(tokenizer), eos)

    def tokenize(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        lines = [t for t in batch["text"] if t.strip()]
        ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
        return {"input_ids": [[*x, eos] for x in ids]}

    def group(batch: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        flat = [t for ids in batch["input_ids"] for t in ids]
        usable = len(flat) // seq_len * seq_len
        return {"input_ids": [flat[i : i + seq_len] for i in range(0, usable, seq_len)]}

    base = text_ds._fingerprint
    tokenized = text_ds.map(
        tokenize,
        batched=True,
        remove_columns=text_ds.column_names,
        new_fingerprint=_fingerprint(base, "tokenize", tok_key),
        desc="tokenize",
    )
    packed = tokenized.map(
        group,
        batched=True,
        batch_size=2000,
        new_fingerprint=_fingerprint(base, "group", tok_key, seq_len),
        desc=f"pack into {seq_len}-token blocks",
    )
    if len(packed) == 0:
        raise DataError(f"dataset has fewer than {seq_len} tokens: cannot make one block")
    return packed.with_format("torch")[:]["input_ids"]


def take_batch(blocks: torch.Tensor, batch_size: int, source: str) -> torch.Tensor:
    """The first ``batch_size`` blocks: the same batch for every round and every optimization."""
    n_blocks, seq_len = blocks.shape
    if n_blocks < batch_size:
        raise DataError(
            f"dataset {source!r} gives {n_blocks} blocks of {seq_len} tokens "
            f"({n_blocks * seq_len} tokens); batch size {batch_size} needs {batch_size} blocks "
            f"({batch_size * seq_len} tokens): use a larger dataset, batch or sequence length"
        )
    return blocks[:batch_size].clone()
