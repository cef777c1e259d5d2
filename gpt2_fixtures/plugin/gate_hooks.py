"""The end-of-session regression gate (logic in results/gate/ and fingerprint.py; docs/gate.md)."""

from __future__ import annotations

from typing import Any

import pytest

from gpt2_fixtures.plugin import benchmark_session
from gpt2_fixtures.plugin.options import gate_option, run_options
from gpt2_fixtures.plugin.outcomes import outcomes
from gpt2_fixtures.results import files, fingerprint, gate


class GateHooks:
    """A registered object, so its hook names never clash with the plugin modules'."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.baseline: dict[str, Any] | None = None
        self.overrides: list[tuple[str | None, str, gate.Threshold]] = []
        self.result: gate.GateResult | None = None
        self.lines: list[str] = []
        path = run_options(config).baseline
        if path:
            self.baseline = self._load_and_check(path)

    def _load_and_check(self, path: str) -> dict[str, Any]:
        """Fail before the grid runs when the baseline is unusable or from another device."""
        try:
            doc = files.load_result(path)
            machine_info: dict[str, Any] = {}
            self.config.hook.pytest_benchmark_update_machine_info(
                config=self.config, machine_info=machine_info
            )
            allow = gate_option(self.config, "allow_device_mismatch")
            fingerprint.check_environment(doc, {"machine_info": machine_info}, allow)
        except files.UnusableInput as exc:
            raise pytest.UsageError(f"gpt2-bench: --gpt2-baseline: {exc}") from None
        return doc

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            for marker in item.iter_markers("gpt2_gate"):
                try:
                    self.overrides += gate.marker_overrides(item.nodeid, marker.kwargs)
                except ValueError as exc:
                    raise pytest.UsageError(str(exc)) from None

    def _current_results(self) -> dict[str, Any] | None:
        """This run's results as --benchmark-json writes them; None when no case ran at all."""
        doc = benchmark_session.results_document(self.config)
        if not doc["benchmarks"] and not outcomes(self.config).failed:
            return None
        return doc

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        opts = run_options(self.config)
        if self.baseline is None and not opts.save_baseline:
            return
        doc = self._current_results()
        if doc is None:
            self.lines.append("gpt2 gate: no benchmark results in this run; nothing gated")
            return
        if opts.save_baseline:
            files.save_result(doc, opts.save_baseline)
            self.lines.append(f"gpt2 gate: baseline written to {opts.save_baseline}")
        if self.baseline is not None:
            self._judge(session, self.baseline, doc)

    def _judge(self, session: pytest.Session, base: dict[str, Any], doc: dict[str, Any]) -> None:
        opts = run_options(self.config)
        settings = gate.settings_from(lambda name: gate_option(self.config, name), self.overrides)
        allow = gate_option(self.config, "allow_device_mismatch")
        self.result = gate.gate_documents(base, doc, settings, allow)
        gate.write_outputs(self.result, opts.gate_markdown, opts.gate_json)
        # 1 regression, 3 not fully judged (docs/gate.md, exit status); a run already failing
        # keeps its status.
        code = self.result.exit_code
        if code and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = code

    @pytest.hookimpl(trylast=True)  # after pytest-benchmark's table
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (self.lines or self.result):
            return
        terminalreporter.section("gpt2 regression gate")
        for line in self.lines:
            terminalreporter.write_line(line)
        if self.result is not None:
            red = self.result.failed
            for line in gate.format_table(self.result).splitlines():
                terminalreporter.write_line(line, red=red and "REGRESSION" in line)
