"""pytest glue for gpt2-bench: options, header, parametrization, fixtures, session-end hooks.

Nothing here measures or compares: that lives in plain modules (``session``, ``measure``,
``steps``, ``gate``, ``report``) which unit tests import without pytest.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Generator
from typing import Any

import pytest
from pytest_benchmark.utils import safe_dumps

from gpt2_fixtures import config as cfg
from gpt2_fixtures.bench import controls, data, distill, flops, hub, measure, models, session
from gpt2_fixtures.bench import distributed as dist_bench
from gpt2_fixtures.plugin import guards
from gpt2_fixtures.plugin.shard import parse_shard, select
from gpt2_fixtures.results import baseline, files, gate, report, tracking

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
        help=_default(
            "random (offline, from the config), pretrained, or auto (random for "
            "presets, pretrained for a hub id or directory)."
        ),
    )
    group.addoption(
        "--gpt2-dataset",
        default="embedded",
        help=_default(
            "embedded (shipped corpus, offline), wikitext-2 (hub), or a text file "
            "or folder of *.txt files."
        ),
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
        help=_default(
            "Comma-separated sequence lengths. None means 64,256 on CPU, 128,512,1024 on CUDA."
        ),
    )
    group.addoption(
        "--gpt2-optimizations",
        type=cfg.parse_recipes,
        default=None,
        help=_default(
            "Comma-separated recipes (eager, sdpa, sdpa-bf16, flash2, int8, "
            "sdpa-compile, ...). None means the device's default grid."
        ),
    )
    group.addoption(
        "--gpt2-rounds",
        type=cfg.parse_positive_int,
        default=None,
        help=_default("Measured rounds per case. None means 20 on CPU and CUDA."),
    )
    group.addoption(
        "--gpt2-threads",
        type=cfg.parse_positive_int,
        default=None,
        help=_default(
            "CPU threads for torch (torch.set_num_threads). None keeps torch's default (one per "
            "core); 1 is steadier on a shared machine."
        ),
    )
    group.addoption(
        "--gpt2-malloc",
        choices=measure.MALLOC_MODES,
        default="steady",
        help=_default(
            "CPU runs: steady serves every block from glibc's heap and never trims it on free, "
            "so warmed-up steps do not re-fault freed memory (README, How it measures); system "
            "leaves the allocator as it is."
        ),
    )
    group.addoption(
        "--gpt2-control",
        choices=controls.CONTROLS,
        default=controls.TWIN,
        help=_default(
            "The workload timed before every round, that the gate's time/control ratio divides "
            "by: twin is a plain-torch GPT-2 of the case's shape and phase, which slows down as "
            "the step does; matmul a fixed matmul loop, cheaper on large GPU cases "
            "(README, How it measures)."
        ),
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
    group.addoption(
        "--gpt2-peak-tflops",
        type=flops.parse_peak_tflops,
        default=None,
        metavar="TFLOPS",
        help=_default(
            "Peak TFLOP/s that MFU divides by, for every case. None means the dense datasheet "
            "peak of the GPU for the case's dtype (docs/optimizations.md); MFU stays empty on "
            "a device missing from that table, CPUs included."
        ),
    )
    _add_gate_options(group)
    _add_report_options(group)
    _add_distributed_options(group)
    _add_phase_options(group)


def _settings_from_options(config: pytest.Config) -> session.Settings:
    opt = config.getoption
    session.set_cpu_threads(opt("gpt2_threads"))
    try:
        resolved = session.resolve(
            device=dist_bench.local_device(opt("gpt2_device"), dist_bench.launch_env()),
            model=opt("gpt2_model"),
            weights=opt("gpt2_weights"),
            dataset=opt("gpt2_dataset"),
            batch_sizes=opt("gpt2_batch_sizes"),
            seq_lens=opt("gpt2_seq_lens"),
            recipes=opt("gpt2_optimizations"),
            rounds=opt("gpt2_rounds"),
            warmup=opt("gpt2_warmup"),
            prompt_lens=opt("gpt2_prompt_lens"),
            new_tokens=opt("gpt2_new_tokens"),
            teacher=opt("gpt2_teacher"),
            student=opt("gpt2_student"),
            kd_temperature=opt("gpt2_kd_temperature"),
            kd_alpha=opt("gpt2_kd_alpha"),
            peak_tflops=opt("gpt2_peak_tflops"),
            control=opt("gpt2_control"),
        )
    except USER_ERRORS as exc:
        raise pytest.UsageError(f"gpt2-bench: {exc}") from None
    if resolved.device_type == "cpu":
        measure.configure_malloc(opt("gpt2_malloc"))
    return resolved


def _add_phase_options(group: pytest.OptionGroup) -> None:
    """Generation and distillation phases (docs/phases.md)."""
    group.addoption(
        "--gpt2-prompt-lens",
        type=cfg.parse_positive_ints,
        default=None,
        help=_default(
            "generate: comma-separated prompt lengths. None means 32 on CPU, 128 on CUDA."
        ),
    )
    group.addoption(
        "--gpt2-new-tokens",
        type=cfg.parse_positive_ints,
        default=None,
        help=_default(
            "generate: tokens generated per call, exactly (no EOS stop); "
            "comma-separated. None means 32 on CPU, 128 on CUDA."
        ),
    )
    group.addoption(
        "--gpt2-teacher",
        default=None,
        help=_default(
            "distill: teacher preset, hub id or directory. None means gpt2 on CUDA, "
            "tiny-teacher on CPU."
        ),
    )
    group.addoption(
        "--gpt2-student",
        default=None,
        help=_default(
            "distill: student preset, hub id or directory (the tokenizer of the "
            "teacher). None means distilgpt2 on CUDA, tiny on CPU."
        ),
    )
    group.addoption(
        "--gpt2-kd-temperature",
        type=distill.parse_temperature,
        default=None,
        help=_default(f"distill: softmax temperature T. None means {distill.DEFAULT_TEMPERATURE}."),
    )
    group.addoption(
        "--gpt2-kd-alpha",
        type=distill.parse_alpha,
        default=None,
        help=_default(
            "distill: share of the T²-scaled KL term in the loss, the LM loss gets "
            f"1 - alpha. None means {distill.DEFAULT_ALPHA}."
        ),
    )


def settings(config: pytest.Config) -> session.Settings:
    """Resolved once per pytest run; cheap (no model or data is loaded)."""
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = _settings_from_options(config)
    return config.stash[SETTINGS]


def pytest_configure(config: pytest.Config) -> None:
    # Under torchrun only rank 0 writes results; before anything reads the output options.
    dist_bench.rank_zero_outputs_only(config.option, dist_bench.launch_env())
    settings(config)  # fail fast, before collection, with one line
    _check_marker_expression(config)
    guards.sigterm_as_interrupt()
    config.addinivalue_line(
        "markers", "gpt2_gate(**thresholds): per-benchmark gate thresholds, e.g. time='20%'"
    )
    config.pluginmanager.register(AtomicJsonHooks(), "gpt2-atomic-json")
    config.pluginmanager.register(GateHooks(config), "gpt2-gate")
    config.pluginmanager.register(ReportHooks(config), "gpt2-report")


class AtomicJsonHooks:
    """``--benchmark-json`` written atomically: pytest-benchmark opens the file for writing
    before it serialises, so a failure there (or a kill) left an empty file where the previous
    results were. Its session object is read at session start, once its own configure ran."""

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        bs = getattr(session.config, "_benchmarksession", None)
        if bs is None or not getattr(bs, "json", None):
            return

        def save_json(output_json: dict[str, Any]) -> None:
            text = safe_dumps(output_json, ensure_ascii=True, indent=4)
            files.atomic_write_text(bs.json, text)
            bs.logger.info(f"Wrote benchmark data in: {bs.json}", purple=True)

        bs.save_json = save_json


def _check_marker_expression(config: pytest.Config) -> None:
    known = guards.registered_markers(config.getini("markers"))
    unknown = guards.unknown_markers(config.getoption("markexpr", ""), known)
    if unknown:
        phases = ", ".join(PHASE_MARKERS)
        raise pytest.UsageError(
            f"gpt2-bench: -m names unknown marker(s) {', '.join(unknown)}; phases are {phases}"
        )


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if SETTINGS not in config.stash:
        return None
    launch = dist_bench.launch_env()
    if launch is None:
        return [settings(config).header()]
    sizes = dist_bench.world_sizes_or_default(config.getoption("gpt2_world_sizes"), launch)
    strategies = config.getoption("gpt2_strategies")
    return [settings(config).header(), dist_bench.header(launch, strategies, sizes)]


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
    if "gpt2_dist_case" in metafunc.fixturenames:
        _parametrize_distributed(metafunc)
    if "gpt2_case" not in metafunc.fixturenames:
        return
    s = settings(metafunc.config)
    params = []
    peers = dist_bench.single_device_skip_reason(dist_bench.launch_env())
    for case in session.grid(_phase(metafunc), s):
        reason = session.skip_reason(case, s) or peers
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    metafunc.parametrize("gpt2_case", params)


def _parametrize_distributed(metafunc: pytest.Metafunc) -> None:
    """DDP/FSDP cases: strategy x training case x world size (docs/distributed.md)."""
    s, launch, opt = settings(metafunc.config), dist_bench.launch_env(), metafunc.config.getoption
    sizes = dist_bench.world_sizes_or_default(opt("gpt2_world_sizes"), launch)
    params = []
    for dcase in dist_bench.grid(session.grid(_phase(metafunc), s), opt("gpt2_strategies"), sizes):
        reason = dist_bench.skip_reason(dcase, launch) or session.skip_reason(dcase.case, s)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(dcase, id=dcase.id, marks=marks))
    metafunc.parametrize("gpt2_dist_case", params)


@pytest.fixture(scope="session")
def gpt2_settings(request: pytest.FixtureRequest) -> session.Settings:
    return settings(request.config)


@pytest.fixture(scope="session")
def gpt2_session(request: pytest.FixtureRequest) -> Generator[session.BenchSession]:
    bench = session.BenchSession(settings(request.config))
    request.config.stash[BENCH_SESSION] = bench
    yield bench
    bench.free_model()


@pytest.fixture(scope="session")
def gpt2_world(request: pytest.FixtureRequest) -> Generator[dist_bench.World]:
    """The torch.distributed process group of a torchrun launch, created on first use."""
    launch = dist_bench.launch_env()
    if launch is None:
        pytest.skip(dist_bench.NOT_LAUNCHED)
    sizes = dist_bench.world_sizes_or_default(request.config.getoption("gpt2_world_sizes"), launch)
    world = dist_bench.World(launch, settings(request.config).device, sizes)
    yield world
    world.close()


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A case that fails keeps no time; user errors are one line; CUDA OOM skips that case."""
    try:
        return (yield)
    except USER_ERRORS as exc:
        _drop_timing(pyfuncitem)
        pytest.fail(f"{exc}", pytrace=False)
    except session.OUT_OF_MEMORY as exc:
        _drop_timing(pyfuncitem)
        message = session.out_of_memory_message(_case_name(pyfuncitem), exc)
    except BaseException:
        _drop_timing(pyfuncitem)  # e.g. a NaN loss after timing: a failure, never a time
        raise
    # Outside the except block the exception (and the tensors its frames hold) is released.
    bench = pyfuncitem.config.stash.get(BENCH_SESSION, None)
    if bench is not None:
        bench.free_model()
    pytest.skip(message)


def _case_name(item: pytest.Function) -> str:
    """The case id (``sdpa-fp32-b8-s512``), whichever parameter holds it."""
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None else item.name


def _drop_timing(item: pytest.Function) -> None:
    """Keep a failed case out of the results: pytest-benchmark leaves out fixtures with errors."""
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if fixture is not None:
        fixture.has_error = True


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    """GPU, library versions and numerics settings: what a baseline must match to be comparable."""
    device = settings(config).device if SETTINGS in config.stash else "cpu"
    machine_info["gpt2"] = session.environment(device)
    machine_info["gpt2"].update(dist_bench.launch_info(dist_bench.launch_env(), device))
    machine_info.setdefault("python_implementation", platform.python_implementation())


def _add_distributed_options(group: pytest.OptionGroup) -> None:
    group.addoption(
        "--gpt2-strategies",
        type=dist_bench.parse_strategies,
        default=",".join(dist_bench.STRATEGIES),
        help=_default("Distributed strategies to run under torchrun: ddp, fsdp (FSDP2)."),
    )
    group.addoption(
        "--gpt2-world-sizes",
        type=cfg.parse_positive_ints,
        default=None,
        help=_default(
            "World sizes to run under torchrun, each on ranks 0..k-1 of the job, e.g. 1,2 for "
            "the scaling efficiency. None means the job's own size."
        ),
    )


# ---------------------------------------------------------------------------------------------
# The regression gate (logic in gate.py and baseline.py; docs/gate.md)


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
    for name, kwargs in [*gate.gate_options(), gate.DEVICE_MISMATCH_OPTION]:
        group.addoption(f"--gpt2-{name}", **kwargs)
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
            doc = files.load_result(path)
            machine_info: dict[str, Any] = {}
            self.config.hook.pytest_benchmark_update_machine_info(
                config=self.config, machine_info=machine_info
            )
            allow = self.config.getoption("gpt2_allow_device_mismatch")
            baseline.check_environment(doc, {"machine_info": machine_info}, allow)
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
        """This run's results as pytest-benchmark would write them with --benchmark-json."""
        # pytest-benchmark has no hook that hands over its results when no JSON is saved, so
        # read its session object (read-only) and build the document through its own hook.
        bs = getattr(self.config, "_benchmarksession", None)
        benchmarks = [b for b in (bs.benchmarks if bs else []) if b and not b.has_error]
        if bs is None or not benchmarks:
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
            files.save_result(doc, opt("gpt2_save_baseline"))
            self.lines.append(f"gpt2 gate: baseline written to {opt('gpt2_save_baseline')}")
        if self.baseline is None:
            return
        settings = gate.settings_from(lambda dest: opt(f"gpt2_{dest}"), self.overrides)
        allow = opt("gpt2_allow_device_mismatch")
        self.result = gate.gate_documents(self.baseline, doc, settings, allow)
        gate.write_outputs(self.result, opt("gpt2_gate_markdown"), opt("gpt2_gate_json"))
        if self.result.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

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
