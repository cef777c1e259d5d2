"""What a run resolves once and hands to the benchmarks: settings, the session, the world.

Also what describes the run: the report header and pytest-benchmark's machine info.
"""

from __future__ import annotations

import platform
from collections.abc import Generator
from typing import Any

import pytest

from gpt2_fixtures.bench import data, environment, hub, memory, models
from gpt2_fixtures.bench import distributed as dist_bench
from gpt2_fixtures.bench import settings as bench_settings
from gpt2_fixtures.bench.workbench import Workbench
from gpt2_fixtures.plugin import guards
from gpt2_fixtures.plugin.options import run_options

SETTINGS = pytest.StashKey[bench_settings.Settings]()
BENCH = pytest.StashKey[Workbench]()
# Errors that a user fixes with an option: one line, never a traceback.
USER_ERRORS = (
    bench_settings.SettingsError,
    models.ModelError,
    data.DataError,
    hub.HubUnavailableError,
)


def settings(config: pytest.Config) -> bench_settings.Settings:
    """Resolved once per pytest run; cheap (no model or data is loaded)."""
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = _resolve(config)
    return config.stash[SETTINGS]


def _resolve(config: pytest.Config) -> bench_settings.Settings:
    opts = run_options(config)
    device = dist_bench.local_device(opts.device, dist_bench.launch_env())
    try:
        resolved = bench_settings.resolve(
            **opts.arguments_for(bench_settings.resolve, device=device)
        )
    except USER_ERRORS as exc:
        raise pytest.UsageError(f"gpt2-bench: {exc}") from None
    return resolved


# Fixtures that make an item one of the suite's benchmarks.
BENCHMARK_FIXTURES = {"gpt2_case", "gpt2_dist_case", "gpt2_bench"}


def runs_benchmarks(items: list[pytest.Item]) -> bool:
    return any(BENCHMARK_FIXTURES & set(getattr(i, "fixturenames", ())) for i in items)


PROCESS_SET = pytest.StashKey[bool]()


def apply_process_settings(config: pytest.Config) -> None:
    """CPU threads, the host allocator and the SIGTERM handler, once per run."""
    if config.stash.get(PROCESS_SET, False):
        return
    config.stash[PROCESS_SET] = True
    opts = run_options(config)
    bench_settings.set_cpu_threads(opts.threads)
    if settings(config).device_type == "cpu":
        memory.configure_malloc(opts.malloc)
    guards.sigterm_as_interrupt()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """What changes the whole process only when benchmarks were collected: ``pytest tests``
    loads the plugin too, and stays as it was."""
    if runs_benchmarks(session.items):
        apply_process_settings(session.config)


def device(config: pytest.Config) -> str:
    """The run's device, or cpu before settings were resolved (e.g. a usage error)."""
    return settings(config).device if SETTINGS in config.stash else "cpu"


def world_sizes(config: pytest.Config, launch: dist_bench.Launch | None) -> list[int]:
    return dist_bench.world_sizes_or_default(run_options(config).world_sizes, launch)


def pytest_report_collectionfinish(
    config: pytest.Config, items: list[pytest.Item]
) -> list[str] | None:
    """The run's configuration, once its process settings are applied (threads, allocator);
    shown where pytest shows its header (not under -q or --no-header)."""
    quiet = config.get_verbosity() < 0 or config.getoption("no_header", False)
    if quiet or SETTINGS not in config.stash or not runs_benchmarks(items):
        return None
    launch = dist_bench.launch_env()
    if launch is None:
        return [settings(config).header()]
    strategies = run_options(config).strategies
    sizes = world_sizes(config, launch)
    return [settings(config).header(), dist_bench.header(launch, strategies, sizes)]


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    """GPU, library versions and numerics settings: what a baseline must match to be comparable.

    Asked for at configure time by ``--benchmark-compare`` (before collection), and at the end
    for the saved file (benchmarks ran): both must describe the process the run measures with."""
    if SETTINGS in config.stash:
        apply_process_settings(config)
    dev = device(config)
    machine_info["gpt2"] = environment.environment(dev)
    plan = settings(config).round_plan().setup_key() if SETTINGS in config.stash else None
    if plan is not None:  # absent by default, so that results of 0.5.0 match
        machine_info["gpt2"]["round_plan"] = plan
    machine_info["gpt2"].update(dist_bench.launch_info(dist_bench.launch_env(), dev))
    machine_info.setdefault("python_implementation", platform.python_implementation())


@pytest.fixture(scope="session")
def gpt2_settings(request: pytest.FixtureRequest) -> bench_settings.Settings:
    return settings(request.config)


@pytest.fixture(scope="session")
def gpt2_bench(request: pytest.FixtureRequest) -> Generator[Workbench]:
    """The model and data cache: one model at a time, freed at the end of the run."""
    bench = Workbench(settings(request.config))
    request.config.stash[BENCH] = bench
    yield bench
    bench.free_model()


@pytest.fixture(scope="session")
def gpt2_world(request: pytest.FixtureRequest) -> Generator[dist_bench.World]:
    """The torch.distributed process group of a torchrun launch, created on first use."""
    launch = dist_bench.launch_env()
    if launch is None:
        pytest.skip(dist_bench.NOT_LAUNCHED)
    world = dist_bench.World(
        launch, settings(request.config).device, world_sizes(request.config, launch)
    )
    yield world
    world.close()
