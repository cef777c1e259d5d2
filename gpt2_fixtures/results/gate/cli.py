"""`gpt2-bench compare` and the gate's options, declared once for argparse and the plugin."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gpt2_fixtures import config
from gpt2_fixtures.results import files
from gpt2_fixtures.results.gate.compare import gate_documents
from gpt2_fixtures.results.gate.render import check_output_paths, format_table, write_outputs
from gpt2_fixtures.results.gate.verdicts import (
    CALIBRATED_TIME_REL,
    CONTROL_TOLERANCES,
    DEFAULT_THRESHOLDS,
    TIME_REL,
    GateSettings,
    Threshold,
    Thresholds,
    parse_threshold,
)


def marker_overrides(
    nodeid: str, thresholds: Mapping[str, Any]
) -> list[tuple[str | None, str, Threshold]]:
    """Per-benchmark thresholds from `@pytest.mark.gpt2_gate(time="20%", peak_memory_mb="2%:5")`.

    Raises ValueError naming the test and the bad value.
    """
    overrides: list[tuple[str | None, str, Threshold]] = []
    for metric, spec in thresholds.items():
        try:
            _, key, threshold = parse_threshold(f"{metric}={spec}")
        except ValueError as err:
            raise ValueError(f"{nodeid}: gpt2_gate marker: {err}") from None
        overrides.append((nodeid, key, threshold))
    return overrides


def _threshold_arg(text: str) -> tuple[str | None, str, Threshold]:
    try:
        return parse_threshold(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def gate_options() -> list[tuple[str, dict[str, Any]]]:
    """The gate's options, declared once: ``--NAME`` for `compare` and `ab`, ``--gpt2-NAME`` in
    the pytest plugin (whose parser is argparse too)."""
    defaults = ", ".join(f"{k}={v}" for k, v in DEFAULT_THRESHOLDS.items())
    settings = GateSettings()
    return [
        (
            "threshold",
            {
                "action": "append",
                "type": _threshold_arg,
                "default": [],
                "metavar": "[PATTERN@]METRIC=PCT%[:FLOOR]",
                # argparse %-formats help strings: the thresholds' own % signs are escaped.
                "help": "override a threshold, globally or for benchmarks matching PATTERN; "
                f"repeatable. Defaults: {defaults}; against a calibrated baseline the "
                f"time-like {TIME_REL:.0%} defaults are {CALIBRATED_TIME_REL:.0%}, raised to "
                "k x the benchmark's between-process spread; a time (tpot_ms) threshold also "
                "sets samples_per_s and tokens_per_s (decode_tokens_per_s), as a rate, unless "
                "they are set".replace("%", "%%"),
            },
        ),
        (
            "alpha",
            {
                "type": config.parse_open_fraction,
                "default": settings.alpha,
                "help": "significance level of the whole comparison (one-sided in the "
                "regression direction, Holm's step-down over every judged test). "
                "Default: %(default)r",
            },
        ),
        (
            "time-basis",
            {
                "choices": ("auto", "raw"),
                "default": settings.time_basis,
                "help": "auto: judge time on the control ratio when both sides have one. "
                "Default: %(default)r",
            },
        ),
        (
            "control-tolerance",
            {
                "type": config.parse_percentage,
                "default": settings.control_tolerance,
                "metavar": "PCT%",
                "help": "how far apart the control workload's medians of the two sides may be "
                "(larger over smaller) before a time/control verdict is inconclusive. Default: "
                + ", ".join(
                    f"{v:.0%} for the {k} control" for k, v in CONTROL_TOLERANCES.items()
                ).replace("%", "%%"),
            },
        ),
        (
            "fail-on-missing",
            {
                "action": "store_true",
                "help": "fail when a baseline benchmark is missing from the current run: the "
                "default since 0.3.0 (kept so that older command lines still parse)",
            },
        ),
        (
            "inconclusive",
            {
                "choices": ("pass", "fail"),
                "default": settings.inconclusive,
                "help": "exit status when some rows could not be judged (inconclusive, n/a, "
                "too few rounds): pass exits 0, fail exits 1. Default: exit 3",
            },
        ),
        (
            "spread-k",
            {
                "type": config.parse_positive_float,
                "default": settings.spread_k,
                "metavar": "K",
                "help": "with a calibrated baseline, a benchmark's threshold is at least K x its "
                "between-process spread. Default: %(default)r",
            },
        ),
    ]


DEVICE_MISMATCH_OPTION: tuple[str, dict[str, Any]] = (
    "allow-device-mismatch",
    {
        "action": "store_true",
        "help": "compare even when the baseline was measured on another device: time is "
        "then judged on the control ratio only, and a case without one is inconclusive",
    },
)


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `compare` and `ab`."""
    for name, kwargs in gate_options():
        parser.add_argument(f"--{name}", **kwargs)
    parser.add_argument("--markdown", metavar="FILE", help="write (append) the verdict as Markdown")
    parser.add_argument("--json", metavar="FILE", help="write the verdict as JSON")


def settings_from(
    get: Callable[[str], Any], overrides: Sequence[tuple[str | None, str, Threshold]] = ()
) -> GateSettings:
    """GateSettings from the options of gate_options(), read by ``get(dest)`` (``dest`` as
    argparse names it, e.g. "time_basis"); ``overrides`` come after the command line's."""
    return GateSettings(
        thresholds=Thresholds().override([*get("threshold"), *overrides]),
        alpha=get("alpha"),
        time_basis=get("time_basis"),
        control_tolerance=get("control_tolerance"),
        inconclusive=get("inconclusive"),
        spread_k=get("spread_k"),
    )


def settings_from_args(args: argparse.Namespace) -> GateSettings:
    return settings_from(lambda dest: getattr(args, dest))


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", help="baseline pytest-benchmark JSON")
    parser.add_argument("current", help="current pytest-benchmark JSON")
    name, kwargs = DEVICE_MISMATCH_OPTION
    parser.add_argument(f"--{name}", **kwargs)
    parser.add_argument(
        "--subset",
        action="store_true",
        help="the current run is a subset of the baseline's grid on purpose: baseline "
        "benchmarks absent from it are 'not selected', not failures",
    )
    add_gate_arguments(parser)


def run_compare(args: argparse.Namespace) -> int:
    """`gpt2-bench compare`: exit 0 pass, 1 regression, 2 unusable input (one line on stderr),
    3 not fully judged."""
    try:
        settings = settings_from_args(args)
        if args.subset:
            settings = replace(settings, fail_on_missing=False)
        check_output_paths(args.markdown, args.json)
        base = files.load_result(args.baseline)
        cur = files.load_result(args.current)
        result = gate_documents(base, cur, settings, args.allow_device_mismatch)
        write_outputs(result, args.markdown, args.json)
        print(format_table(result))
    except (files.UnusableInput, ValueError) as err:
        print(f"gpt2-bench compare: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # never exit 1 (the regression code) on a crash
        print(f"gpt2-bench compare: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return result.exit_code
