"""pytest glue for gpt2-bench: options, header, parametrization, fixtures, session-end hooks.

Nothing here measures or compares: that lives in plain modules (``session``, ``measure``,
``steps``, ``gate``, ``report``) which unit tests import without pytest.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Generator
from typing import Any

import pytest
from pytest_benchmark.utils import safe_dumps

from gpt2_fixtures import baseline, data, gate, hub, models, report, session, tracking
from gpt2_fixtures import config as cfg
from gpt2_fixtures.shard import parse_shard, select

SETTINGS = pytest.StashKey[session.Settings]()
BENCH_SESSION = pytest.StashKey[session.BenchSession]()
USER_ERRORS = (
    session.SettingsError,
    models.ModelError,
    data.DataError,
    hub.HubUnavailableError,
)
# Marker -> phase: `pytest benchmarks -m inference` selects the inference phase.
PHASE_MARKERS = {"train": "train", "inference": "infer", "generation": "generate"}
PHASE_MARKERS |= {"distillation": "distill"}


def _default(text: str) -> str:
    return text + " Default: %(default)s."


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpt2", "gpt2-bench: GPT-2 performance benchmarks")
    group.addoption(
        "--gpt2-model",
        default=None,
        help=_default(
            f"Preset {list(cfg.PRESETS)}, hub id or local directory. None means gpt2 on CUDA, "
            "tiny on CPU."
        ),
    )
    group.addoption(
        "--gpt2-weights",
        type=cfg.parse_weights,
        default="auto",
        help=_default("random (offline, from the config), pretrained, or auto (random for "
                      "presets, pretrained for a hub id or directory)."),
    )
    group.addoption(
        "--gpt2-dataset",
        default="embedded",
        help=_default("embedded (shipped corpus, offline), wikitext-2 (hub), or a text file "
                      "or folder of *.txt files."),
    )
    group.addoption(
        "--gpt2-device",
        type=cfg.parse_device,
        default="auto",
        help=_default("auto, cpu, cuda or cuda:N."),
    )
    group.addoption(
        "--gpt2-batch-sizes",
        type=cfg.parse_positive_ints,
        default=None,
        help=_default("Comma-separated batch sizes. None means 1,4 on CPU, 1,8,32 on CUDA."),
    )
    group.addoption(
        "--gpt2-seq-lens",
        type=cfg.parse_positive_ints,
        default=None,
        help=_default("Comma-separated sequence lengths. None means 64,256 on CPU, "
                      "128,512,1024 on CUDA."),
    )
    group.addoption(
        "--gpt2-optimizations",
        type=cfg.parse_recipes,
        default=None,
        help=_default("Comma-separated recipes (eager, sdpa, sdpa-bf16, flash2, int8, "
                      "sdpa-compile, ...). None means the device's default grid."),
    )
    group.addoption(
        "--gpt2-rounds",
        type=cfg.parse_positive_int,
        default=None,
        help=_default("Measured rounds per case. None means 10 on CPU, 20 on CUDA."),
    )
    group.addoption(
        "--gpt2-warmup",
        type=cfg.parse_non_negative_int,
        default=None,
        help=_default("Warmup rounds per case (untimed). None means 2 on CPU, 3 on CUDA."),
    )
    group.addoption(
        "--gpt2-shard",
        type=parse_shard,
        default=None,
        metavar="I/N",
        help=_default(
            "Run only shard I of N (1-based) of the collected cases, assigned by case id so a "
            "case always lands on the same shard; merge the shards with `gpt2-bench merge`."
        ),
    )
    _add_gate_options(group)
    _add_report_options(group)


def _settings_from_options(config: pytest.Config) -> session.Settings:
    opt = config.getoption
    try:
        return session.resolve(
            device=opt("gpt2_device"),
            model=opt("gpt2_model"),
            weights=opt("gpt2_weights"),
            dataset=opt("gpt2_dataset"),
            batch_sizes=opt("gpt2_batch_sizes"),
            seq_lens=opt("gpt2_seq_lens"),
            recipes=opt("gpt2_optimizations"),
            rounds=opt("gpt2_rounds"),
            warmup=opt("gpt2_warmup"),
        )
    except USER_ERRORS as exc:
        raise pytest.UsageError(f"gpt2-bench: {exc}") from None


def settings(config: pytest.Config) -> session.Settings:
    """Resolved once per pytest run; cheap (no model or data is loaded)."""
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = _settings_from_options(config)
    return config.stash[SETTINGS]


def pytest_configure(config: pytest.Config) -> None:
    settings(config)  # fail fast, before collection, with one line
    config.addinivalue_line(
        "markers", "gpt2_gate(**thresholds): per-benchmark gate thresholds, e.g. time='20%'"
    )
    config.pluginmanager.register(GateHooks(config), "gpt2-gate")
    config.pluginmanager.register(ReportHooks(config), "gpt2-report")


def pytest_report_header(config: pytest.Config) -> str | None:
    return settings(config).header() if SETTINGS in config.stash else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--gpt2-shard: keep this shard's cases, keyed by the name part of the node id
    (e.g. `test_train[eager-fp32-b8-s128]`), and report the others as deselected."""
    shard = config.getoption("gpt2_shard")
    if shard is None:
        return
    kept, dropped = select(items, shard, key=lambda item: item.name)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _phase(metafunc: pytest.Metafunc) -> str:
    for marker in metafunc.definition.iter_markers():
        if marker.name in PHASE_MARKERS:
            return PHASE_MARKERS[marker.name]
    raise pytest.UsageError(
        f"{metafunc.definition.nodeid}: a gpt2_case benchmark needs a phase marker "
        f"({', '.join(PHASE_MARKERS)})"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gpt2_case" not in metafunc.fixturenames:
        return
    s = settings(metafunc.config)
    params = []
    for case in session.grid(_phase(metafunc), s):
        reason = session.skip_reason(case, s)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    metafunc.parametrize("gpt2_case", params)


@pytest.fixture(scope="session")
def gpt2_settings(request: pytest.FixtureRequest) -> session.Settings:
    return settings(request.config)


@pytest.fixture(scope="session")
def gpt2_session(request: pytest.FixtureRequest) -> Generator[session.BenchSession]:
    bench = session.BenchSession(settings(request.config))
    request.config.stash[BENCH_SESSION] = bench
    yield bench
    bench.free_model()


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """User-facing failures become one line; CUDA OOM in one case becomes a skip of that case."""
    case = getattr(pyfuncitem, "callspec", None) and pyfuncitem.callspec.params.get("gpt2_case")
    try:
        return (yield)
    except USER_ERRORS as exc:
        pytest.fail(f"{exc}", pytrace=False)
    except session.OUT_OF_MEMORY as exc:
        message = session.out_of_memory_message(case, exc)
    # Outside the except block the exception (and the tensors its frames hold) is released.
    bench = pyfuncitem.config.stash.get(BENCH_SESSION, None)
    if bench is not None:
        bench.free_model()
    pytest.skip(message)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """GPU, library versions and numerics settings: what a baseline must match to be comparable."""
    device = settings(config).device if SETTINGS in config.stash else "cpu"
    machine_info["gpt2"] = session.environment(device)
    machine_info.setdefault("python_implementation", platform.python_implementation())


# ---------------------------------------------------------------------------------------------
# The regression gate (logic in gate.py and baseline.py; docs/gate.md)


def _threshold_option(text: str) -> tuple[str | None, str, gate.Threshold]:
    try:
        return gate.parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_gate_options(group: pytest.OptionGroup) -> None:
    group.addoption(
        "--gpt2-baseline",
        metavar="PATH",
        default=None,
        help=_default(
            "Gate this run against a baseline result JSON at the end of the session; "
            "a regression fails the session (exit status 1)."
        ),
    )
    group.addoption(
        "--gpt2-threshold",
        action="append",
        type=_threshold_option,
        default=[],
        metavar="[PATTERN@]METRIC=PCT%[:FLOOR]",
        help="Gate threshold override, repeatable. Defaults: "
        + ", ".join(f"{k}={v}" for k, v in gate.DEFAULT_THRESHOLDS.items()).replace("%", "%%"),
    )
    group.addoption(
        "--gpt2-alpha", type=float, default=0.01, help=_default("Gate significance level.")
    )
    group.addoption(
        "--gpt2-time-basis",
        choices=("auto", "raw"),
        default="auto",
        help=_default("auto judges time on the control ratio when both sides have one."),
    )
    group.addoption(
        "--gpt2-fail-on-missing",
        action="store_true",
        help="Gate: fail when a baseline benchmark did not run.",
    )
    group.addoption(
        "--gpt2-allow-device-mismatch",
        action="store_true",
        help="Gate: compare even when the baseline comes from another device.",
    )
    group.addoption("--gpt2-gate-markdown", metavar="FILE", help="Append the verdict as Markdown.")
    group.addoption("--gpt2-gate-json", metavar="FILE", help="Write the verdict as JSON.")
    group.addoption(
        "--gpt2-save-baseline",
        metavar="PATH",
        default=None,
        help=_default(
            "Write this run's results (with per-round samples) atomically as a baseline file."
        ),
    )


class GateHooks:
    """Session-end gate. A registered object, so its hook names never clash with this module's."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.baseline: dict[str, Any] | None = None
        self.overrides: list[tuple[str | None, str, gate.Threshold]] = []
        self.result: gate.GateResult | None = None
        self.lines: list[str] = []
        path = config.getoption("gpt2_baseline")
        if path:
            self.baseline = self._load_and_check(path)

    def _load_and_check(self, path: str) -> dict[str, Any]:
        """Fail before the grid runs when the baseline is unusable or from another device."""
        try:
            doc = baseline.load_result(path)
            machine_info: dict[str, Any] = {}
            self.config.hook.pytest_benchmark_update_machine_info(
                config=self.config, machine_info=machine_info
            )
            allow = self.config.getoption("gpt2_allow_device_mismatch")
            baseline.check_environment(doc, {"machine_info": machine_info}, allow)
        except baseline.UnusableInput as exc:
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
        """This run's results as pytest-benchmark would write them with --benchmark-json."""
        # pytest-benchmark has no hook that hands over its results when no JSON is saved, so
        # read its session object (read-only) and build the document through its own hook.
        bs = getattr(self.config, "_benchmarksession", None)
        benchmarks = [b for b in (bs.benchmarks if bs else []) if b and not b.has_error]
        if not benchmarks:
            return None
        doc = self.config.hook.pytest_benchmark_generate_json(
            config=self.config,
            benchmarks=benchmarks,
            include_data=True,
            machine_info=bs.get_machine_info(),
            commit_info={},
        )
        return json.loads(safe_dumps(doc))  # exactly what a saved file would hold

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        opt = self.config.getoption
        if self.baseline is None and not opt("gpt2_save_baseline"):
            return
        doc = self._current_results()
        if doc is None:
            self.lines.append("gpt2 gate: no benchmark results in this run; nothing gated")
            return
        if opt("gpt2_save_baseline"):
            baseline.save_result(doc, opt("gpt2_save_baseline"))
            self.lines.append(f"gpt2 gate: baseline written to {opt('gpt2_save_baseline')}")
        if self.baseline is None:
            return
        settings = gate.GateSettings(
            thresholds=gate.Thresholds().override([*opt("gpt2_threshold"), *self.overrides]),
            alpha=opt("gpt2_alpha"),
            time_basis=opt("gpt2_time_basis"),
            fail_on_missing=opt("gpt2_fail_on_missing"),
        )
        allow = opt("gpt2_allow_device_mismatch")
        self.result = gate.gate_documents(self.baseline, doc, settings, allow)
        gate.write_outputs(self.result, opt("gpt2_gate_markdown"), opt("gpt2_gate_json"))
        if self.result.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

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


# ---------------------------------------------------------------------------------------------
# Console summary and Weights & Biases (logic in report.py and tracking.py; docs/report.md)


def _add_report_options(group: pytest.OptionGroup) -> None:
    group.addoption(
        "--gpt2-wandb",
        action="store_true",
        help="Log the session to Weights & Biases as one run (needs the wandb extra). WANDB_* "
        "variables apply; WANDB_MODE=offline writes a local run under $WANDB_DIR/wandb/.",
    )
    group.addoption(
        "--gpt2-wandb-project",
        default=None,
        help=_default("W&B project. None means $WANDB_PROJECT, else gpt2-bench."),
    )
    group.addoption(
        "--gpt2-wandb-entity",
        default=None,
        help=_default("W&B entity (user or team). None means $WANDB_ENTITY or your default."),
    )
    group.addoption(
        "--gpt2-wandb-run-name",
        default=None,
        help=_default("W&B run name. None means $WANDB_NAME or a generated name."),
    )


class ReportHooks:
    """End of session: the summary table per phase, and the optional W&B run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.wandb_line: str | None = None

    def _benchmarks(self) -> list[Any]:
        # pytest-benchmark's measured benchmarks, read-only (it has no public accessor).
        bs = getattr(self.config, "_benchmarksession", None)
        return [b for b in (bs.benchmarks if bs else []) if b and not b.has_error]

    def _results(self) -> dict[str, Any]:
        """This run's results as --benchmark-json would write them, commit included."""
        hook, config = self.config.hook, self.config
        machine_info = hook.pytest_benchmark_generate_machine_info(config=config)
        hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
        commit_info = hook.pytest_benchmark_generate_commit_info(config=config)
        hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
        doc = hook.pytest_benchmark_generate_json(
            config=config,
            benchmarks=self._benchmarks(),
            include_data=True,
            machine_info=machine_info,
            commit_info=commit_info,
        )
        return json.loads(safe_dumps(doc))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        opt = self.config.getoption
        if not opt("gpt2_wandb"):
            return  # wandb is never imported without the flag
        options = tracking.WandbOptions(
            project=opt("gpt2_wandb_project"),
            entity=opt("gpt2_wandb_entity"),
            run_name=opt("gpt2_wandb_run_name"),
        )
        self.wandb_line = tracking.log_results(self._results(), options).message

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        text = report.console_summary([b.as_dict(include_data=False) for b in self._benchmarks()])
        if text:
            terminalreporter.section("gpt2-bench summary")
            terminalreporter.write(text)
        if self.wandb_line:
            terminalreporter.write_line(f"gpt2-bench wandb: {self.wandb_line}")
