"""`gpt2-bench`: the command-line steps that CI runs outside pytest.

Each subcommand's logic lives in its own module, which provides an ``add_*arguments(parser)`` and a
``run*(args) -> int`` function; modules are imported only when their subcommand runs, so
``gpt2-bench merge`` does not pay for matplotlib or scipy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gpt2_fixtures import __version__

# name -> (help, module, function adding the arguments, function running it and returning the
# exit status)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "compare": (
        "gate a result against a baseline (exit 0 pass, 1 regression, 2 unusable input, "
        "3 not fully judged)",
        "gpt2_fixtures.results.gate.cli",
        "add_compare_arguments",
        "run_compare",
    ),
    "ab": (
        "interleaved A/B runs of a base commit and the working tree, gated",
        "gpt2_fixtures.results.ab",
        "add_ab_arguments",
        "run_ab_command",
    ),
    "baseline": (
        "validate a result, or pool several runs into a calibrated baseline, and write it "
        "atomically",
        "gpt2_fixtures.results.baseline",
        "add_baseline_arguments",
        "run_baseline",
    ),
    "merge": (
        "join the result files of --gpt2-shard runs into one",
        "gpt2_fixtures.results.merge",
        "add_merge_arguments",
        "run_merge",
    ),
    "report": (
        "write report.md with tables and PNG plots from result files",
        "gpt2_fixtures.results.report.document",
        "add_arguments",
        "run",
    ),
    "doctor": (
        "check whether this machine is fit to benchmark on: one table of ok/warn/fail checks",
        "gpt2_fixtures.bench.doctor.cli",
        "add_doctor_arguments",
        "run_doctor",
    ),
    "comment": (
        "render a gate verdict JSON as one pull-request comment in Markdown (exit 2 on bad input)",
        "gpt2_fixtures.results.comment",
        "add_comment_arguments",
        "run_comment",
    ),
    "history": (
        "change points over a series of result files, confirmed by the gate (exit 1: a "
        "regression still in place)",
        "gpt2_fixtures.results.history.cli",
        "add_history_arguments",
        "run_history",
    ),
    "bisect": (
        "git bisect run between GOOD and BAD, each step an interleaved A/B against GOOD",
        "gpt2_fixtures.results.bisect",
        "add_bisect_arguments",
        "run_bisect",
    ),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser; only the module of the subcommand named in ``argv`` is imported."""
    parser = argparse.ArgumentParser(prog="gpt2-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gpt2-bench {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module_name, add_name, run_name) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name in argv:
            module = importlib.import_module(module_name)
            getattr(module, add_name)(sub)
            sub.set_defaults(run=getattr(module, run_name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
