"""Interleaved A/B runs on one machine: `gpt2-bench ab --base REF`.

The base commit is exported with `git archive` into a temporary folder (read-only for the
repository: no worktree, branch or index is touched). Then the base and the working tree run
`pytest benchmarks` alternately, in separate processes, in the order A B B A A B ..., so that
machine drift (other jobs, thermal state, frequency) falls on both sides alike. The rounds of each
side are pooled per benchmark and gated like a stored baseline (gate.compare).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpt2_fixtures.results import files, gate
from gpt2_fixtures.results.metrics import EXTRA_METRICS, std_key


class AbError(Exception):
    """The A/B run cannot go on; str() is one line that says why."""


# --- git ----------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AbError(f"git {' '.join(args)}: {message[-1] if message else 'failed'}")
    return proc


def resolve_commit(repo: Path, ref: str) -> str:
    return (
        _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").stdout.decode().strip()
    )


def export_tree(repo: Path, commit: str, dest: Path) -> None:
    """Write the files of `commit` into `dest` (git archive), leaving the repository untouched."""
    archive = _git(repo, "archive", "--format=tar", commit).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")  # "data": no absolute paths or links out of dest


def repo_root(path: Path) -> Path:
    return Path(_git(path, "rev-parse", "--show-toplevel").stdout.decode().strip())


# --- running one side ---------------------------------------------------------------------------


def side_env(tree: Path) -> dict[str, str]:
    """Put `tree` first on the import path, so its own gpt2_fixtures is the one imported."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
    env.pop("PYTEST_ADDOPTS", None)  # options are passed explicitly, the same for both sides
    return env


def check_imports(tree: Path, python: str) -> None:
    """Fail early when `tree` would import another checkout's package (e.g. an install)."""
    code = "import gpt2_fixtures; print(gpt2_fixtures.__file__)"
    proc = subprocess.run(
        [python, "-c", code], cwd=tree, env=side_env(tree), capture_output=True, check=False
    )
    where = proc.stdout.decode().strip()
    if proc.returncode != 0 or not Path(where).resolve().is_relative_to(tree.resolve()):
        raise AbError(f"{tree}: gpt2_fixtures does not import from this tree (got {where!r})")


def run_side(tree: Path, out_json: Path, pytest_args: Sequence[str], python: str) -> None:
    """One `pytest benchmarks` process in `tree`, writing its results to `out_json`."""
    cmd = [
        python,
        "-m",
        "pytest",
        "benchmarks",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--benchmark-json={out_json}",
        *pytest_args,
    ]
    proc = subprocess.run(cmd, cwd=tree, env=side_env(tree), capture_output=True, check=False)
    if proc.returncode not in (0, 1) or not out_json.is_file():
        tail = proc.stdout.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise AbError(f"pytest in {tree} exited {proc.returncode}: {tail[0]}")


def order(repeats: int) -> list[str]:
    """A B B A A B ...: each side goes first as often as the other (cancels linear drift)."""
    pairs = (("base", "head") if i % 2 == 0 else ("head", "base") for i in range(repeats))
    return [side for pair in pairs for side in pair]


# --- pooling -----------------------------------------------------------------------------------


def _pooled_mean_std(parts: Sequence[tuple[float, float, int]]) -> tuple[float, float]:
    """Mean and standard deviation of the union of groups given as (mean, std, n).

    Total sum of squares = within-group (n-1)s^2 plus between-group n(mean - grand mean)^2.
    """
    n = sum(k for _, _, k in parts)
    mean = sum(m * k for m, _, k in parts) / n
    ss = sum((k - 1) * s * s + k * (m - mean) ** 2 for m, s, k in parts)
    return mean, (ss / (n - 1)) ** 0.5 if n > 1 else 0.0


def _stats(data: list[float]) -> dict[str, Any]:
    return {
        "min": min(data),
        "max": max(data),
        "mean": statistics.fmean(data),
        "stddev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "median": statistics.median(data),
        "rounds": len(data),
        "iterations": 1,
        "data": data,
    }


def _pool_entry(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first = entries[0]
    data = [x for e in entries for x in e["stats"].get("data") or []]
    if not data:
        raise AbError(f"{first['name']}: no per-round samples to pool")
    infos = [dict(e.get("extra_info") or {}) for e in entries]
    rounds = [len(e["stats"].get("data") or []) for e in entries]
    info = dict(infos[0])
    info.update(_pooled_round_lists(infos, rounds))
    for metric in EXTRA_METRICS:  # every metric the gate judges, from the one registry
        info.update(_pooled_metric(metric.key, std_key(metric), infos, rounds))
    return {**first, "stats": _stats(data), "extra_info": info}


def _pooled_round_lists(infos: Sequence[Mapping[str, Any]], rounds: Sequence[int]) -> dict:
    """Per-round lists (``control_round_s``, ``ttft_round_ms`` ...) concatenated in run order; a
    list is pooled only when every run has it aligned with its rounds, else it becomes None."""
    keys = {k for info in infos for k, v in info.items() if isinstance(v, list)}
    out: dict[str, Any] = {}
    for key in sorted(keys):
        parts = [info.get(key) for info in infos]
        aligned = all(
            isinstance(p, list) and len(p) == n for p, n in zip(parts, rounds, strict=True)
        )
        out[key] = [x for p in parts for x in p] if aligned else None  # type: ignore[union-attr]
    return out


def _pooled_metric(
    key: str, std: str, infos: Sequence[Mapping[str, Any]], rounds: Sequence[int]
) -> dict[str, Any]:
    """Mean (and std, when every run recorded one) over the union of the runs' rounds; nothing
    when some run lacks the metric (the first run's value alone would pass for all of them)."""
    values = [info.get(key) for info in infos]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return {key: None} if any(v is not None for v in values) else {}
    stds = [info.get(std) for info in infos]
    has_std = all(isinstance(s, int | float) for s in stds)
    parts = [
        (float(v), float(s) if has_std else 0.0, n)  # type: ignore[arg-type]
        for v, s, n in zip(values, stds, rounds, strict=True)
    ]
    mean, pooled_std = _pooled_mean_std(parts)
    return {key: mean, std: pooled_std} if has_std else {key: mean}


def pool_results(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result whose benchmarks hold the rounds of all `docs`, in run order."""
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for doc in docs:
        for bench in doc["benchmarks"]:
            by_name.setdefault(bench["fullname"], []).append(bench)
    pooled = {**docs[0], "benchmarks": [_pool_entry(v) for v in by_name.values()]}
    pooled["pooled_from"] = len(docs)
    return pooled


# --- the command ---------------------------------------------------------------------------------


def run_ab(
    repo: Path,
    base_ref: str,
    repeats: int,
    out_dir: Path,
    pytest_args: Sequence[str],
    python: str = sys.executable,
    log: Any = print,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run base and head alternately; return the pooled (base, head) results."""
    root = repo_root(repo)
    commit = resolve_commit(root, base_ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="gpt2-bench-base-") as tmp:
        base_tree = Path(tmp)
        export_tree(root, commit, base_tree)
        trees = {"base": base_tree, "head": root}
        for tree in trees.values():
            check_imports(tree, python)
        for i, side in enumerate(order(repeats)):
            out = out_dir / f"{side}-{len(runs[side]) + 1}.json"
            what = commit[:12] if side == "base" else "working tree"
            log(f"[{i + 1}/{2 * repeats}] {side} ({what})")
            run_side(trees[side], out, pytest_args, python)
            runs[side].append(files.load_result(out))
    pooled = {side: pool_results(docs) for side, docs in runs.items()}
    for side, doc in pooled.items():
        files.save_result(doc, out_dir / f"{side}-pooled.json")
    return pooled["base"], pooled["head"]


def add_ab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="git ref of the base, e.g. origin/main")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each side. Default: %(default)r"
    )
    parser.add_argument("--repo", default=".", help="repository. Default: %(default)r")
    parser.add_argument(
        "--out", default=None, help="folder for the per-run and pooled JSON. Default: a temp dir"
    )
    gate.add_gate_arguments(parser)
    parser.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        help="after --: arguments for both pytest runs, e.g. -- -k infer --gpt2-rounds 10",
    )


def run_ab_command(args: argparse.Namespace) -> int:
    """`gpt2-bench ab`: exit 0 pass, 1 regression, 2 when the runs could not be made."""
    pytest_args = list(args.pytest_args)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    try:
        if args.repeats < 1:
            raise AbError(f"--repeats must be at least 1, got {args.repeats}")
        settings = gate.settings_from_args(args)
        out_dir = Path(args.out or tempfile.mkdtemp(prefix="gpt2-bench-ab-"))
        base, head = run_ab(
            Path(args.repo), args.base, args.repeats, out_dir, pytest_args, log=_log
        )
        result = gate.gate_documents(base, head, settings)
    except (AbError, files.UnusableInput, ValueError) as err:
        print(f"gpt2-bench ab: error: {err}", file=sys.stderr)
        return 2
    print(gate.format_table(result))
    print(f"results: {out_dir}")
    gate.write_outputs(result, args.markdown, args.json)
    return result.exit_code


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
