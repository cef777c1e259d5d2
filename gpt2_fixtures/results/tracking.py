"""Weights & Biases sink: one run per benchmark session, never a reason for the session to fail.

``wandb`` is an optional extra (``pip install 'gpt2-bench[wandb]'``) and is imported only inside
:func:`log_results`, which the plugin calls only when ``--gpt2-wandb`` is given. Every failure
(package missing, no API key, no network) becomes one line of text for the terminal; the
benchmark results on disk are never touched.

wandb reads its own ``WANDB_*`` environment variables (``WANDB_MODE``, ``WANDB_DIR``,
``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_API_KEY`` ...) for every argument left as None.
Offline runs are written to ``$WANDB_DIR/wandb/offline-run-<time>-<id>/`` (``WANDB_DIR``
defaults to the working directory); ``wandb sync <that dir>`` uploads one later.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_fixtures.results.metrics import EXTRA_METRICS
from gpt2_fixtures.results.report import cases as report_cases
from gpt2_fixtures.results.report import document as report_document
from gpt2_fixtures.results.report import tables as report_tables

DEFAULT_PROJECT = "gpt2-bench"
# Without network wandb.init retries for init_timeout seconds (90 by default); the benchmark
# session waits for it, so we bound it unless the user chose a value (WANDB_INIT_TIMEOUT).
INIT_TIMEOUT_S = 20.0
_LOCAL_MODES = ("offline", "dryrun", "disabled")

SPEEDUP = f"speedup_vs_{report_cases.REFERENCE_OPTIMIZATION}"
# Judged metrics come from the one registry (results/metrics.py): a new row there is a new column.
METRIC_COLUMNS: tuple[str, ...] = tuple(m.key for m in EXTRA_METRICS)
# Table columns: raw numbers, not text; the speedup with its 95% interval.
TABLE_COLUMNS: tuple[str, ...] = (
    "name",
    "phase",
    "optimization",
    "model",
    "device",
    "batch_size",
    "seq_len",
    "median_ms",
    "stddev_ms",
    "rounds",
    "memory_kind",
    *METRIC_COLUMNS,
    SPEEDUP,
    f"{SPEEDUP}_low",
    f"{SPEEDUP}_high",
)
RESULTS_FILE = "gpt2-bench-results.json"
SUMMARY_METRICS = ("median_ms", *METRIC_COLUMNS)


@dataclass(frozen=True)
class WandbOptions:
    """The ``--gpt2-wandb-*`` options; None lets wandb take its ``WANDB_*`` variable."""

    project: str | None = None
    entity: str | None = None
    run_name: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened, as one terminal line; ``run_dir`` is the local run directory if any."""

    ok: bool
    message: str
    run_dir: Path | None = None


# --------------------------------------------------------------------------------------------
# What is logged (plain data, testable without wandb)


def case_row(case: report_cases.CaseResult, speedup: report_cases.Ratio | None) -> list[Any]:
    values: dict[str, Any] = {
        "name": case.name,
        "phase": case.phase,
        "optimization": case.optimization,
        "model": case.model,
        "device": case.device,
        "batch_size": case.batch_size,
        "seq_len": case.seq_len,
        "median_ms": case.median_ms,
        "stddev_ms": case.stddev_s * 1e3,
        "rounds": case.rounds,
        "memory_kind": case.extra.get("memory_kind"),
        SPEEDUP: speedup.value if speedup else None,
        f"{SPEEDUP}_low": speedup.low if speedup else None,
        f"{SPEEDUP}_high": speedup.high if speedup else None,
    }
    return [values[col] if col in values else case.metric(col) for col in TABLE_COLUMNS]


def table_rows(cases: Sequence[report_cases.CaseResult]) -> list[list[Any]]:
    ups = report_cases.speedup_ratios(cases)
    rows = []
    for phase in report_cases.phases_in(cases):
        in_phase = report_tables.sort_cases([c for c in cases if c.phase == phase])
        rows += [case_row(c, ups[c.key]) for c in in_phase]
    return rows


def run_config(
    results: Mapping[str, Any], cases: Sequence[report_cases.CaseResult]
) -> dict[str, Any]:
    """Grid, device, versions and commit. Only named fields: nothing from the environment."""
    machine = results.get("machine_info") or {}
    gpt2 = dict(machine.get("gpt2") or {})
    commit = results.get("commit_info") or {}
    version_keys = ("torch", "transformers", "datasets", "python", "cuda_version", "driver_version")
    return {
        "grid": {
            "phases": report_cases.phases_in(cases),
            "optimizations": sorted({c.optimization for c in cases}),
            "models": sorted({str(c.model) for c in cases if c.model}),
            "batch_sizes": sorted({c.batch_size for c in cases if c.batch_size}),
            "seq_lens": sorted({c.seq_len for c in cases if c.seq_len}),
            "cases": len(cases),
        },
        "device": gpt2.get("device"),
        "device_name": gpt2.get("device_name"),
        "machine": gpt2,
        "versions": {
            **{k: gpt2.get(k) for k in version_keys},
            "pytest_benchmark": results.get("version"),
        },
        "commit": {k: commit.get(k) for k in ("id", "branch", "dirty", "time", "project")},
    }


def summary_metrics(cases: Sequence[report_cases.CaseResult]) -> dict[str, float]:
    """``<phase>/<case id>/<metric>`` for every case, plus the best and median speedup per phase."""
    out: dict[str, float] = {}
    for case in cases:
        case_id = case.name.partition("[")[2].rstrip("]") or case.name
        values = {"median_ms": case.median_ms, **{k: case.metric(k) for k in SUMMARY_METRICS[1:]}}
        out.update({f"{case.phase}/{case_id}/{k}": v for k, v in values.items() if v is not None})
    out.update(report_document.summary_statistics(cases))
    return out


# --------------------------------------------------------------------------------------------
# The wandb calls


def _import_wandb() -> Any:
    import wandb  # an optional extra; only imported when --gpt2-wandb asked for it

    return wandb


def _settings_kwargs() -> dict[str, Any]:
    # The commit is in the config already (from pytest-benchmark's commit_info).
    kwargs: dict[str, Any] = {
        "console": "off",
        "save_code": False,
        "silent": True,
        "disable_git": True,
    }
    if "WANDB_INIT_TIMEOUT" not in os.environ:
        kwargs["init_timeout"] = INIT_TIMEOUT_S
    return kwargs


def _start_run(wandb: Any, options: WandbOptions, config: dict[str, Any]) -> tuple[Any, str]:
    """Start the run; without credentials or network fall back to an offline run.

    Returns the run and a note ("" when the requested mode worked).
    """
    kwargs = {
        "project": options.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        "entity": options.entity,
        "name": options.run_name,
        "job_type": "benchmark",
        "config": config,
    }
    mode = os.environ.get("WANDB_MODE", "online").lower()
    if mode not in _LOCAL_MODES:
        # wandb.login(prompt=False) looks for a key (env, settings, netrc) without prompting
        # and, once setup is silent, without a network call.
        wandb.setup(settings=wandb.Settings(silent=True))
        if not wandb.login(prompt=False, verify=False):
            note = "no W&B API key found (set WANDB_API_KEY or run `wandb login`)"
            return _offline_run(wandb, kwargs), note
    try:
        return wandb.init(settings=wandb.Settings(**_settings_kwargs()), **kwargs), ""
    except Exception as exc:
        if mode in _LOCAL_MODES:
            raise
        note = f"could not start an online W&B run ({type(exc).__name__}: {_first_line(exc)})"
        return _offline_run(wandb, kwargs), note


def _offline_run(wandb: Any, kwargs: dict[str, Any]) -> Any:
    settings = wandb.Settings(mode="offline", **_settings_kwargs())
    return wandb.init(settings=settings, **kwargs)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _log_contents(
    wandb: Any, run: Any, results: Mapping[str, Any], cases: Sequence[report_cases.CaseResult]
) -> None:
    run.log({"cases": wandb.Table(columns=list(TABLE_COLUMNS), data=table_rows(cases))})
    run.summary.update(summary_metrics(cases))
    with tempfile.TemporaryDirectory(prefix="gpt2-bench-wandb-") as tmp:
        plots = report_document.write_plots(cases, Path(tmp))
        images = {
            f"plots/{plot.path.stem}": wandb.Image(str(plot.path), caption=plot.caption)
            for phase_plots in plots.values()
            for plot in phase_plots
        }
        if images:
            run.log(images)
    # The results file twice: in the run's files (so an offline run directory is complete) and
    # as a versioned artifact (offline, wandb stages it under WANDB_DATA_DIR until `wandb sync`).
    results_file = Path(run.dir) / RESULTS_FILE
    results_file.write_text(json.dumps(results, indent=2), encoding="utf-8")
    artifact = wandb.Artifact("gpt2-bench-results", type="benchmark-results")
    artifact.add_file(str(results_file), name=RESULTS_FILE)
    run.log_artifact(artifact)


def _run_dir(run: Any) -> Path | None:
    sync_dir = getattr(getattr(run, "settings", None), "sync_dir", None)
    return Path(sync_dir) if sync_dir else None


def log_results(results: Mapping[str, Any], options: WandbOptions) -> Outcome:
    """Log one pytest-benchmark results dict as one W&B run. Never raises."""
    if os.environ.get("WANDB_MODE", "").lower() == "disabled":
        return Outcome(True, "WANDB_MODE=disabled: nothing logged to W&B")
    try:
        wandb = _import_wandb()
    except ImportError:
        return Outcome(
            False,
            "wandb is not installed (pip install 'gpt2-bench[wandb]'); results not logged to W&B",
        )
    try:
        cases = report_cases.cases_from_benchmarks(results.get("benchmarks") or [])
        run, note = _start_run(wandb, options, run_config(results, cases))
        try:
            _log_contents(wandb, run, results, cases)
        finally:
            run.finish()
    except Exception as exc:
        return Outcome(False, f"W&B logging failed, results not logged ({_describe(exc)})")
    return _outcome(run, note)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _outcome(run: Any, note: str) -> Outcome:
    run_dir = _run_dir(run)
    offline = bool(getattr(getattr(run, "settings", None), "_offline", False))
    if offline:
        where = f"offline run in {run_dir}; upload it with `wandb sync {run_dir}`"
        return Outcome(
            not note, f"{note}; wrote an {where}" if note else f"wrote an {where}", run_dir
        )
    url = getattr(run, "url", None)
    return Outcome(True, f"logged W&B run {url or ''} (local copy: {run_dir})", run_dir)
