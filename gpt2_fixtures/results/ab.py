"""Interleaved A/B runs on one machine: `gpt2-bench ab --base REF` and/or `--base-python PY`.

The base commit is exported with `git archive` into a temporary folder (read-only for the
repository: no worktree, branch or index is touched); without --base both sides run the working
tree. Then base and head run `pytest benchmarks` alternately, in separate processes, each with its
own interpreter (--base-python, --head-python; default the current one), in the order
A B B A A B ..., so that machine drift (other jobs, thermal state, frequency) falls on both sides
alike. The rounds of each side are pooled per benchmark and gated like a stored baseline; across
two environments on raw wall-clock (ab_env, docs/upgrades.md).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpt2_fixtures.results import ab_env, files, gate, pooling
from gpt2_fixtures.results.fingerprint import check_environment


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


def pool_results(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result whose benchmarks hold the rounds of all `docs`, in run order."""
    try:
        pooled = pooling.pool_results(docs, "A/B runs")
    except files.UnusableInput as err:
        raise AbError(str(err)) from None
    pooled["pooled_from"] = len(docs)
    return pooled


# --- the command ---------------------------------------------------------------------------------


def run_ab(
    repo: Path,
    base_ref: str | None,
    repeats: int,
    out_dir: Path,
    pytest_args: Sequence[str],
    python: str = sys.executable,
    log: Any = print,
    base_python: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run base and head alternately; return the pooled (base, head) results. `python` runs the
    head, `base_python` (default: `python`) the base; without `base_ref` both run `repo`'s tree."""
    root = repo_root(repo)
    commit = resolve_commit(root, base_ref) if base_ref else None
    pythons = {"base": base_python or python, "head": python}
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="gpt2-bench-base-") as tmp:
        trees = {"base": root, "head": root}
        if commit:
            trees["base"] = Path(tmp)
            export_tree(root, commit, trees["base"])
        _check_sides(trees, pythons, across=base_python is not None or python != sys.executable)
        for i, side in enumerate(order(repeats)):
            out = out_dir / f"{side}-{len(runs[side]) + 1}.json"
            what = commit[:12] if side == "base" and commit else "working tree"
            log(f"[{i + 1}/{2 * repeats}] {side} ({what}, {pythons[side]})")
            run_side(trees[side], out, pytest_args, pythons[side])
            runs[side].append(files.load_result(out))
            if i == 1:  # both sides ran once: their devices and measuring setups must agree
                _check_results(runs["base"][0], runs["head"][0])
    pooled = {side: pool_results(docs) for side, docs in runs.items()}
    for side, doc in pooled.items():
        files.save_result(doc, out_dir / f"{side}-pooled.json")
    return pooled["base"], pooled["head"]


def _check_sides(trees: Mapping[str, Path], pythons: Mapping[str, str], across: bool) -> None:
    """Each tree imports its own gpt2_fixtures; across environments, each interpreter imports the
    project and torch and both see the same device (ab_env.probe)."""
    if not across:
        for side in ("base", "head"):
            check_imports(trees[side], pythons[side])
        return
    try:
        seen = {s: ab_env.probe(trees[s], pythons[s], side_env(trees[s])) for s in ("base", "head")}
        ab_env.check_same_device(seen["base"], seen["head"])
    except ab_env.EnvError as err:
        raise AbError(str(err)) from None


def _check_results(base: Mapping[str, Any], head: Mapping[str, Any]) -> None:
    """Stop after the first pair when the sides ran on another device or measuring setup."""
    try:
        check_environment(base, head)
    except files.UnusableInput as err:
        raise AbError(f"base and head results: {err}") from None


def add_ab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", default=None, help="git ref of the base, e.g. origin/main. Default: the working "
        "tree (then --base-python is needed)"
    )  # fmt: skip
    parser.add_argument(
        "--base-python",
        default=None,
        metavar="PY",
        help="interpreter of the base side (another environment, e.g. the old torch); judged on "
        "raw wall-clock. Default: the current one (sys.executable)",
    )
    parser.add_argument(
        "--head-python",
        default=None,
        metavar="PY",
        help="interpreter of the head side. Default: the current one (sys.executable)",
    )
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
    """`gpt2-bench ab`: exit 0 pass, 1 regression, 2 when the runs could not be made, 3 not
    fully judged."""
    pytest_args = list(args.pytest_args)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    base_python = getattr(args, "base_python", None)
    head_python = getattr(args, "head_python", None)
    across = base_python is not None or head_python is not None
    try:
        if not args.base and base_python is None:
            raise AbError("give --base REF (another commit), --base-python PY (another "
                          "environment), or both")  # fmt: skip
        if args.repeats < 1:
            raise AbError(f"--repeats must be at least 1, got {args.repeats}")
        ab_env.check_writable(args.markdown, args.json)
        settings = gate.settings_from_args(args)
        head = ab_env.resolve_python(head_python or sys.executable)
        base = ab_env.resolve_python(base_python or sys.executable)
        out_dir = Path(args.out or tempfile.mkdtemp(prefix="gpt2-bench-ab-"))
        base_doc, head_doc = run_ab(
            Path(args.repo), args.base, args.repeats, out_dir, pytest_args, python=head,
            log=_log, base_python=base if across else None,
        )  # fmt: skip
        lines: list[str] = []
        if across or ab_env.stack_differences(base_doc, head_doc):
            pythons = {"base": base, "head": head}
            base_runs, head_runs = (
                [files.load_result(out_dir / f"{side}-{i + 1}.json") for i in range(args.repeats)]
                for side in ("base", "head")
            )
            runs = (base_runs, head_runs)
            lines, result = ab_env.judge_across(base_doc, head_doc, settings, pythons, runs)
        else:
            result = gate.gate_documents(base_doc, head_doc, settings)
    except (AbError, ab_env.EnvError, files.UnusableInput, ValueError) as err:
        print(f"gpt2-bench ab: error: {err}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    print(gate.format_table(ab_env.without_header(result, lines)))
    print(f"results: {out_dir}")
    try:
        gate.write_outputs(result, args.markdown, args.json)
    except files.UnusableInput as err:
        print(f"gpt2-bench ab: error: {err}", file=sys.stderr)
        return 2
    return result.exit_code


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
