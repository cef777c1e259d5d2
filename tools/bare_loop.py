"""pytest plugin: does a case report what the same work takes in a user's plain loop?

Loaded with ``-p bare_loop`` (tools/ on PYTHONPATH) on a CPU run of the benchmarks. Right before
and right after every fp32 training or inference case, in the same process, a transformers
GPT-2 of the case's preset, attention and shape runs in a bare ``perf_counter`` loop (the work of
the suite's step and nothing else: train mode, forward with labels, backward, AdamW as in
nanoGPT, ``zero_grad``; or eval mode, one forward under ``torch.inference_mode``; 2 warmup calls,
then ``BARE_LOOP_ROUNDS`` timed ones, default 20). At the end it prints, per case, the reported
median (pytest-benchmark's, from the case's rounds), the bare medians before and after, and
reported / bare (bare: the median of both loops' rounds), and writes them as JSON to
``BARE_LOOP_JSON`` when that is set. ``--bare-loop-band LOW,HIGH`` (default 0.9,1.1) makes the
session fail when a ratio falls outside it.

A ratio is judged only when the bare loop agrees with itself: its medians before and after the
case within ``--bare-loop-steady`` (default 5%) of each other. Where the machine moved more than
that while the case ran, reported / bare says more about the machine than about the suite: the
case is ``not judged`` (with how far the bare loop moved), and the check does not pass.

    PYTHONPATH=tools OMP_NUM_THREADS=1 pytest benchmarks -p bare_loop --gpt2-threads 1 \\
        -k "test_train or test_infer" --benchmark-json=out.json

docs/measuring.md ("Against a bare loop") has the table and what a round measures.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

RESULTS: list[dict[str, Any]] = []
PHASES = ("train", "infer")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bare-loop-band",
        default="0.9,1.1",
        help="reported / bare must lie in LOW,HIGH for every checked case. Default: %(default)s",
    )
    parser.addoption(
        "--bare-loop-steady",
        type=float,
        default=0.05,
        help="a case is judged only when its bare loop's medians before and after it differ by "
        "at most this fraction. Default: %(default)s",
    )


INSIDE, OUTSIDE, NOT_JUDGED = "inside", "outside", "not judged"


def verdict(
    ratio: float, before: float, after: float, band: tuple[float, float], steady: float
) -> str:
    """``inside``/``outside`` the band, or ``not judged`` when the bare loop moved by more than
    ``steady`` between before and after the case (the machine, not the suite, moved)."""
    if abs(after / before - 1) > steady:
        return NOT_JUDGED
    return INSIDE if band[0] <= ratio <= band[1] else OUTSIDE


def checked(item: pytest.Item) -> Any:
    """The case when this item is an fp32, uncompiled, single-device train or infer case."""
    case = getattr(item, "funcargs", {}).get("gpt2_case")
    opt = getattr(case, "optimization", None)
    if case is None or case.phase not in PHASES or opt is None:
        return None
    plain = opt.precision == "fp32" and not (opt.int8 or opt.compile or opt.pad_vocab)
    return case if plain and not opt.fused_adamw else None


def bare_step(config: Any, case: Any) -> Callable[[], None]:
    """The case's work in a plain loop: what a user would write with transformers and torch."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    attn = case.optimization.attn_implementation
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    ids = torch.randint(0, int(config.vocab_size), (case.batch_size, case.seq_len))
    if case.phase == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(input_ids=ids, use_cache=False)

        return infer
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def train() -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return train


def bare_rounds(config: Any, case: Any, rounds: int) -> list[float]:
    step = bare_step(config, case)
    for _ in range(2):
        step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    case = checked(item)
    bench = getattr(item, "funcargs", {}).get("gpt2_bench")
    if case is None or bench is None or not bench.settings.device.startswith("cpu"):
        yield
        return
    rounds = int(os.environ.get("BARE_LOOP_ROUNDS", "20"))
    config = bench.config
    before = bare_rounds(config, case, rounds)
    outcome = yield
    if outcome.excinfo is not None:
        return
    after = bare_rounds(config, case, rounds)
    stats = getattr(item.funcargs.get("benchmark"), "stats", None)
    data = list(getattr(getattr(stats, "stats", None), "data", None) or [])
    if not data:
        return
    reported = statistics.median(data)
    bare = statistics.median(before + after)
    before_s, after_s = statistics.median(before), statistics.median(after)
    cfg = item.config
    judged = verdict(reported / bare, before_s, after_s, _band(cfg), _steady(cfg))
    RESULTS.append(
        {
            "name": item.name,
            "reported_ms": reported * 1e3,
            "reported_min_ms": min(data) * 1e3,
            "reported_max_ms": max(data) * 1e3,
            "bare_before_ms": before_s * 1e3,
            "bare_after_ms": after_s * 1e3,
            "bare_moved": after_s / before_s - 1,
            "ratio": reported / bare,
            "verdict": judged,
        }
    )


def _band(config: pytest.Config) -> tuple[float, float]:
    low, _, high = str(config.getoption("--bare-loop-band")).partition(",")
    return float(low), float(high)


def _steady(config: pytest.Config) -> float:
    return float(config.getoption("--bare-loop-steady"))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not RESULTS:
        return
    low, high = _band(config)
    write = terminalreporter.write_line
    write("")
    write(
        "| case | reported median ms [min, max] | bare before | bare after | bare moved "
        "| reported / bare |"
    )
    write("|---|---|---|---|---|---|")
    for r in RESULTS:
        flag = {INSIDE: "", OUTSIDE: " **outside**", NOT_JUDGED: " not judged"}[r["verdict"]]
        write(
            f"| {r['name']} | {r['reported_ms']:.2f} [{r['reported_min_ms']:.2f}, "
            f"{r['reported_max_ms']:.2f}] | {r['bare_before_ms']:.2f} | {r['bare_after_ms']:.2f} "
            f"| {r['bare_moved']:+.1%} | {r['ratio']:.3f}{flag} |"
        )
    counts = {v: sum(r["verdict"] == v for r in RESULTS) for v in (INSIDE, OUTSIDE, NOT_JUDGED)}
    write(
        f"bare loop: {counts[INSIDE]} inside {low:g}-{high:g}, {counts[OUTSIDE]} outside, "
        f"{counts[NOT_JUDGED]} not judged (the bare loop moved by more than "
        f"{_steady(config):.0%} while the case ran)"
    )
    path = os.environ.get("BARE_LOOP_JSON")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(
                {"band": [low, high], "steady": _steady(config), "cases": RESULTS}, fh, indent=1
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # the check passes only when every case was judged and lies inside the band
    if any(r["verdict"] != INSIDE for r in RESULTS) and exitstatus == 0:
        session.exitstatus = 1
