"""pytest plugin: does a case report what the same work takes in a user's plain loop?

Loaded with ``-p bare_loop`` (tools/ on PYTHONPATH) on a CPU run of the benchmarks. For every fp32
training or inference case, a transformers GPT-2 of the case's preset, attention and shape runs
as a user would write it (train mode, forward with labels, backward, AdamW as in nanoGPT,
``zero_grad``; or eval mode, one forward under ``torch.inference_mode``), **interleaved with the
case's own rounds**: before each round's control workload, one untimed bare call (it brings the
bare model back into the caches, as the call before it would in a plain loop) and then one
timed with ``perf_counter`` (``BARE_LOOP_BURST`` calls in all, default 2, the last one timed).
Each timed round of the case is paired with the bare call just before it, one control workload
apart (0.02-0.9 s on the default CPU grid), so the machine's speed, which moves by tens of
percent within a minute on a shared microVM, moves both.

Per case it prints the reported median (pytest-benchmark's, from the case's rounds), the bare
median, and the median of the per-round ratios round / bare with its 95% distribution-free
interval (order statistics of the binomial), and writes them as JSON to ``BARE_LOOP_JSON`` when
that is set. ``--bare-loop-band LOW,HIGH`` (default 0.9,1.1) judges the interval: ``inside``
when it lies in the band, ``outside`` when it lies beyond it, ``not judged`` when it straddles an
edge (the rounds cannot tell; run more with ``--gpt2-rounds``). The session fails unless every
case is inside.

    PYTHONPATH=tools OMP_NUM_THREADS=1 pytest benchmarks -p bare_loop --gpt2-threads 1 \\
        --gpt2-rounds 40 -k "test_train or test_infer" --benchmark-json=out.json

docs/measuring.md ("What a round measures, against a bare loop") has the tables and what a
round measures.
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

from gpt2_fixtures.results.gate.stats import median_interval

RESULTS: list[dict[str, Any]] = []
PHASES = ("train", "infer")


class Pairs:
    """What ran before each round (warmup and timed) of the checked case now running: the timed
    bare call's seconds and the control's own, in call order. (A plain class: the tests load
    this file without registering it as a module, which a dataclass needs.)"""

    def __init__(self, bare: list[float] | None = None, control: list[float] | None = None):
        self.bare: list[float] = bare if bare is not None else []
        self.control: list[float] = control if control is not None else []


# The checked case now running (one runs at a time); None between checked cases.
PAIRED: dict[str, Pairs | None] = {"case": None}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bare-loop-band",
        default="0.9,1.1",
        help="the interval of round / bare must lie in LOW,HIGH for every checked case. "
        "Default: %(default)s",
    )


def pytest_configure(config: pytest.Config) -> None:
    from gpt2_fixtures.bench import controls

    inner = controls.control_for

    def control_for(model: Any, device: str, case: Any, *args: Any, **kwargs: Any) -> Any:
        control = inner(model, device, case, *args, **kwargs)
        pairs = PAIRED["case"]
        if pairs is None or not _plain(case) or not device.startswith("cpu"):
            return control
        return BareBeforeControl(control, bare_step(model.config, case), pairs)

    controls.control_for = control_for  # workbench asks the module for it, per case


INSIDE, OUTSIDE, NOT_JUDGED = "inside", "outside", "not judged"


class BareBeforeControl:
    """The case's control, with a burst of bare calls before it in every round (warmup and
    timed): the untimed ones first, the last timed into ``pairs``. The control's own time is
    what it returns, measured after the burst, so the case's rounds see what they always see
    right before them: the control, then the step."""

    def __init__(self, control: Any, step: Callable[[], None], pairs: Pairs) -> None:
        self.control, self.step, self.pairs = control, step, pairs
        self.kind = control.kind
        self.burst = max(2, int(os.environ.get("BARE_LOOP_BURST", "2")))

    def run(self) -> float:
        for _ in range(self.burst - 1):
            self.step()
        start = time.perf_counter()
        self.step()
        self.pairs.bare.append(time.perf_counter() - start)
        self.pairs.control.append(float(self.control.run()))
        return self.pairs.control[-1]


def verdict(low: float, high: float, band: tuple[float, float]) -> str:
    """``inside`` when the interval [low, high] lies in the band, ``outside`` when it lies
    beyond it, else ``not judged``: the rounds cannot tell which."""
    if band[0] <= low and high <= band[1]:
        return INSIDE
    return OUTSIDE if high < band[0] or low > band[1] else NOT_JUDGED


def _plain(case: Any) -> bool:
    opt = getattr(case, "optimization", None)
    if getattr(case, "phase", None) not in PHASES or opt is None:
        return False
    plain = opt.precision == "fp32" and not (opt.int8 or opt.compile or opt.pad_vocab)
    return plain and not opt.fused_adamw


def checked(item: pytest.Item) -> Any:
    """The case when this item is an fp32, uncompiled, single-device train or infer case."""
    case = getattr(item, "funcargs", {}).get("gpt2_case")
    return case if case is not None and _plain(case) else None


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    case = checked(item)
    bench = getattr(item, "funcargs", {}).get("gpt2_bench")
    if case is None or bench is None or not bench.settings.device.startswith("cpu"):
        yield
        return
    pairs = PAIRED["case"] = Pairs()
    try:
        outcome = yield
    finally:
        PAIRED["case"] = None
    benchmark = item.funcargs.get("benchmark")
    stats = getattr(benchmark, "stats", None)
    data = list(getattr(getattr(stats, "stats", None), "data", None) or [])
    info = getattr(benchmark, "extra_info", {})
    recorded = list(info.get("control_round_s") or [])
    after = list(info.get("control_after_round_s") or [])
    if outcome.excinfo is None and data:
        RESULTS.append(summarise(item.name, data, recorded, pairs, _band(item.config), after))


def summarise(
    name: str,
    data: list[float],
    recorded: list[float],
    pairs: Pairs,
    band: tuple[float, float],
    after: list[float] | None = None,
) -> dict[str, Any]:
    """One case's row: its rounds ``data`` paired with the ``len(data)`` bare calls before
    them (the warmup rounds' come first; where the case ran its control once more after the
    last round, ``after``: its ``control_after_round_s``, the burst before that one comes
    last and is left out). The pairing holds only if the controls that ran after those bare
    calls are the ones the case recorded for its rounds (``recorded``: its
    ``control_round_s``); otherwise the case is not judged."""
    row: dict[str, Any] = {"name": name, "reported_ms": statistics.median(data) * 1e3}
    row |= {"reported_min_ms": min(data) * 1e3, "reported_max_ms": max(data) * 1e3}
    n = len(data)
    last = len(pairs.control) - (1 if after and pairs.control[-1:] == after[-1:] else 0)
    paired = len(pairs.bare) == len(pairs.control) and pairs.control[last - n : last] == recorded
    if last < n or not paired:
        why = f"{len(pairs.bare)} bare calls, their controls not the {n} rounds' own: not paired"
        return row | {"verdict": NOT_JUDGED, "why": why}
    bare = pairs.bare[last - n : last]
    ratios = [t / b for t, b in zip(data, bare, strict=True)]
    low, high = median_interval(ratios)
    row |= {"bare_ms": statistics.median(bare) * 1e3, "bare_min_ms": min(bare) * 1e3}
    row |= {"bare_max_ms": max(bare) * 1e3, "rounds": len(data)}
    row |= {"bare_round_ms": [b * 1e3 for b in bare]}
    row |= {"ratio": statistics.median(ratios), "ratio_low": low, "ratio_high": high}
    row |= {"ratio_of_medians": statistics.median(data) / statistics.median(bare)}
    return row | {"verdict": verdict(low, high, band)}


def _band(config: pytest.Config) -> tuple[float, float]:
    low, _, high = str(config.getoption("--bare-loop-band")).partition(",")
    return float(low), float(high)


NOTHING_CHECKED = "bare loop: nothing checked (no fp32 train or infer case ran on a CPU)"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not RESULTS:
        terminalreporter.write_line(NOTHING_CHECKED)
        return
    low, high = _band(config)
    write = terminalreporter.write_line
    write("")
    write(
        "| case | reported median ms [min, max] | bare median ms [min, max] "
        "| round / bare: median [95% interval] |"
    )
    write("|---|---|---|---|")
    for r in RESULTS:
        flag = {INSIDE: "", OUTSIDE: " **outside**", NOT_JUDGED: " not judged"}[r["verdict"]]
        span = f"[{r['reported_min_ms']:.2f}, {r['reported_max_ms']:.2f}]"
        reported = f"{r['reported_ms']:.2f} {span}"
        if "ratio" not in r:
            write(f"| {r['name']} | {reported} | | {r['why']}{flag} |")
            continue
        bare = f"{r['bare_ms']:.2f} [{r['bare_min_ms']:.2f}, {r['bare_max_ms']:.2f}]"
        ratio = f"{r['ratio']:.3f} [{r['ratio_low']:.3f}, {r['ratio_high']:.3f}]"
        write(f"| {r['name']} | {reported} | {bare} | {ratio}{flag} |")
    counts = {v: sum(r["verdict"] == v for r in RESULTS) for v in (INSIDE, OUTSIDE, NOT_JUDGED)}
    write(
        f"bare loop: {counts[INSIDE]} inside {low:g}-{high:g}, {counts[OUTSIDE]} outside, "
        f"{counts[NOT_JUDGED]} not judged (the interval straddles an edge of the band)"
    )
    path = os.environ.get("BARE_LOOP_JSON")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"band": [low, high], "cases": RESULTS}, fh, indent=1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # the check passes only when some case was checked and every one was judged inside the band
    if exitstatus == 0 and (not RESULTS or any(r["verdict"] != INSIDE for r in RESULTS)):
        session.exitstatus = 1
