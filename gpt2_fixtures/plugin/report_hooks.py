"""End of session: the console summary per phase, the optional W&B run, the atomic JSON writer
(logic in results/report/ and results/tracking.py; docs/report.md)."""

from __future__ import annotations

import pytest

from gpt2_fixtures.plugin import benchmark_session
from gpt2_fixtures.plugin.options import run_options
from gpt2_fixtures.results import tracking
from gpt2_fixtures.results.report import tables as report_tables


class AtomicJsonHooks:
    """``--benchmark-json`` written atomically, from session start: pytest-benchmark's session
    object exists once its own (trylast) configure ran."""

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        benchmark_session.write_json_atomically(session.config)
        benchmark_session.keep_round_data(session.config)


class ReportHooks:
    """The summary table per phase, and the W&B run when --gpt2-wandb asks for one."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.wandb_line: str | None = None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        opts = run_options(self.config)
        if not opts.wandb:
            return  # wandb is never imported without the flag
        options = tracking.WandbOptions(
            project=opts.wandb_project, entity=opts.wandb_entity, run_name=opts.wandb_run_name
        )
        doc = benchmark_session.results_document(self.config)
        self.wandb_line = tracking.log_results(doc, options).message

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        # With per-round data (docs/measuring.md, "The sequence"): the summary shows the spread.
        text = report_tables.console_summary(benchmark_session.benchmark_dicts(self.config))
        if text:
            terminalreporter.section("gpt2-bench summary")
            terminalreporter.write(text)
        if self.wandb_line:
            terminalreporter.write_line(f"gpt2-bench wandb: {self.wandb_line}")
