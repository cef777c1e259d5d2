"""Split a benchmark grid into N stable shards, so that several runners share one large grid.

A case is assigned by its id alone (e.g. ``test_train[eager-fp32-b8-s128]``), never by its position
in the collected list: adding or removing other cases never moves it, and the same case always lands
on the same shard in every process and on every runner. Python's ``hash()`` is salted per process
(PYTHONHASHSEED), so the assignment uses a SHA-256 digest instead.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

_FORMAT_HINT = "expected I/N with 1 <= I <= N, e.g. 1/4"


@dataclass(frozen=True)
class Shard:
    """One share of the grid: shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"invalid shard {self.index}/{self.count}: {_FORMAT_HINT}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, case_id: str) -> bool:
        """True when ``case_id`` belongs to this shard."""
        return shard_of(case_id, self.count) == self.index


def parse_shard(value: str) -> Shard:
    """Parse ``I/N`` for ``--gpt2-shard``; raises ``argparse.ArgumentTypeError`` with the reason."""
    index_text, sep, count_text = value.strip().partition("/")
    try:
        if not sep:
            raise ValueError
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid shard {value!r}: {_FORMAT_HINT}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"invalid shard {value!r}: the shard count N must be at least 1"
        )
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(
            f"invalid shard {value!r}: the shard index I must be between 1 and {count}"
        )
    return Shard(index, count)


def shard_of(case_id: str, n: int) -> int:
    """The 1-based shard (1..n) that ``case_id`` belongs to among ``n`` shards."""
    if n < 1:
        raise ValueError(f"shard count must be at least 1, got {n}")
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    # 64 bits of the digest modulo n: the bias against the last shards is below n / 2**64.
    return int.from_bytes(digest[:8], "big") % n + 1


def select(items: Iterable[T], shard: Shard, key: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """Split ``items`` into (kept, deselected) for ``shard``, both in their original order."""
    kept: list[T] = []
    dropped: list[T] = []
    for item in items:
        (kept if shard.owns(key(item)) else dropped).append(item)
    return kept, dropped
