"""`gpt2-bench history`: when did a benchmark change, over a series of result files.

Reads result files (a pytest-benchmark storage folder, a folder of JSON, or a list), orders them
by commit time, splits them by device, and reports the change points the gate would also judge
(detect.py), newest first, in history.md with one PNG per benchmark that changed. Exit 1 when
the newest level of any benchmark is a regression still in place, 0 otherwise, 2 on unusable
input. Pure JSON and numpy: no torch, no pytest. See docs/history.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpt2_fixtures import config
from gpt2_fixtures.results import files, gate
from gpt2_fixtures.results.history import detect, render
from gpt2_fixtures.results.history import series as hs
from gpt2_fixtures.results.history.analysis import DEFAULT_METRICS, MIN_SEGMENT, analyse

# --- command line -------------------------------------------------------------------------------


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", help="result files, or folders of them (e.g. .benchmarks/<machine>/)"
    )
    parser.add_argument(
        "--out", default="history", help="folder for history.md and PNGs. Default: %(default)r"
    )
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="metric to follow, repeatable: time/control, time, peak_memory_mb, tokens_per_s, "
        f"... Default: {', '.join(DEFAULT_METRICS)} (time/control falls back to time "
        "where no control was recorded)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the change points as JSON")
    parser.add_argument(
        "--since", metavar="REF", help="only results from REF on: a SHA, ISO date or git ref"
    )
    parser.add_argument(
        "--min-segment",
        type=config.parse_positive_int,
        default=MIN_SEGMENT,
        help="commits needed on each side of a change point. Default: %(default)r",
    )
    for name, kwargs in gate.gate_options():
        parser.add_argument(f"--{name}", **kwargs)


def _load(args: argparse.Namespace) -> tuple[list[hs.DeviceGroup], list[str]]:
    docs, notes = hs.load_inputs(args.paths)
    groups = hs.group_by_device(docs)
    if args.since:
        groups = hs.keep_since(groups, hs.since_time(args.since, groups))
        if not groups:
            raise files.UnusableInput(f"--since {args.since}: no results from then on")
    return groups, notes


def run_history(args: argparse.Namespace) -> int:
    """Exit 0: no regression in place; 1: the newest level of a benchmark regressed; 2: bad
    input (one line on stderr)."""
    try:
        settings = gate.settings_from(lambda dest: getattr(args, dest))
        metrics = tuple(detect.metric_named(m) for m in (args.metric or DEFAULT_METRICS))
        groups, notes = _load(args)
    except (files.UnusableInput, ValueError) as err:
        print(f"gpt2-bench history: error: {err}", file=sys.stderr)
        return 2
    history = analyse(groups, metrics, settings, args.min_segment)
    history.notes.extend(notes)
    out = Path(args.out)
    plots = render.write_plots(history, out)
    files.atomic_write_text(out / "history.md", render.to_markdown(history, plots))
    if args.json:
        text = json.dumps(render.to_json(history), indent=2, allow_nan=False) + "\n"
        files.atomic_write_text(Path(args.json), text)
    print(render.summary(history))
    print("\n".join(render.terminal_lines(history)))
    print(f"wrote {out / 'history.md'} and {len(plots)} plot(s)")
    return history.exit_code
