"""`gpt2-bench bisect GOOD BAD [-- pytest args]`: the first commit where the benchmarks regress.

`git bisect run` in a temporary worktree (the user's checkout, index and branch are never
touched), each step an interleaved A/B of the checked-out commit against GOOD through
`gpt2-bench ab`'s public functions (ab.run_ab, then gate.gate_documents), so every step is judged
exactly as a pull request would be. A commit whose benchmarks cannot run, or whose verdict is not
clear (inconclusive), is skipped (`git bisect skip`, exit 125) with the reason. The step process
imports this package from where it runs now, not from the commit under test, which may predate
it. Exit 0: first bad commit found; 1: BAD does not regress against GOOD; 2: unusable input;
3: only skipped commits are left (the first bad commit is one of several), or BAD itself could
not be judged. See docs/history.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gpt2_fixtures
from gpt2_fixtures.results import ab, files, gate

SKIP = 125  # git bisect run: "this commit cannot be tested"
CONFIG = "bisect-config.pickle"  # written by this process, read by its own step processes


class BisectError(Exception):
    """The bisection cannot start or go on; str() is one line."""


# --- one step: runs inside `git bisect run`, in the worktree, at the commit under test ---------


def step(out_dir: Path) -> int:
    """A/B the checked-out commit against GOOD; 0 good, 1 bad, 125 skip. Writes the gate table
    and its JSON under out_dir/steps/ so the parent can show the table that convicted a commit."""
    config = pickle.loads((out_dir / CONFIG).read_bytes())
    tree = Path.cwd()
    commit = ab.resolve_commit(tree, "HEAD")
    record = out_dir / "steps" / commit
    record.mkdir(parents=True, exist_ok=True)
    try:
        base, head = ab.run_ab(
            tree, config["good"], config["repeats"], record, config["pytest_args"], log=_log
        )
        result = gate.gate_documents(base, head, config["settings"])
    except (ab.AbError, files.UnusableInput, ValueError) as err:
        return _skip(record, commit, f"cannot be measured: {err}")
    table = gate.format_table(result)
    (record / "table.txt").write_text(table + "\n")
    (record / "gate.json").write_text(json.dumps(gate.to_json(result), indent=2) + "\n")
    verdict = _verdict(result)
    if verdict == "skip":
        return _skip(record, commit, "cannot be judged: " + result.summary())
    (record / "verdict").write_text(verdict + "\n")
    _log(f"bisect: {commit[:12]} is {verdict} against {config['good'][:12]}")
    return 1 if verdict == "bad" else 0


def _verdict(result: gate.GateResult) -> str:
    if result.exit_code == 1:
        return "bad"
    inconclusive = any(r.verdict == gate.INCONCLUSIVE for r in result.rows)
    return "skip" if result.exit_code != 0 or inconclusive else "good"


def _skip(record: Path, commit: str, reason: str) -> int:
    (record / "verdict").write_text("skip\n")
    (record / "reason.txt").write_text(reason + "\n")
    _log(f"bisect: {commit[:12]} skipped ({reason})")
    return SKIP


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the command ---------------------------------------------------------------------------------


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise BisectError(f"git {' '.join(args)}: {lines[-1] if lines else 'failed'}")
    return proc


def _step_command(out_dir: Path) -> list[str]:
    # -P: do not put the worktree first on sys.path; the step's code is this installation's
    return [sys.executable, "-P", "-m", "gpt2_fixtures.results.bisect", "--step", str(out_dir)]


def _step_env() -> dict[str, str]:
    env = dict(os.environ)
    here = str(Path(gpt2_fixtures.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def steps_taken(out_dir: Path) -> list[dict[str, str]]:
    """Every A/B run made, oldest first: commit and verdict (good, bad, skip)."""
    found = []
    for record in (out_dir / "steps").glob("*/verdict"):
        found.append((record.stat().st_mtime, record.parent.name, record.read_text().strip()))
    return [{"commit": c, "verdict": v} for _, c, v in sorted(found)]


def bisect(
    repo: Path, good_ref: str, bad_ref: str, out_dir: Path, config: dict[str, Any]
) -> dict[str, Any]:
    """Run the bisection; return what it found (first_bad, candidates, steps, messages)."""
    root = ab.repo_root(repo)
    good, bad = ab.resolve_commit(root, good_ref), ab.resolve_commit(root, bad_ref)
    if not good or not bad:
        raise BisectError(f"not a commit: {good_ref if not good else bad_ref}")
    if good == bad or _git(root, "merge-base", "--is-ancestor", good, bad, check=False).returncode:
        raise BisectError(f"GOOD {good_ref} is not an ancestor of BAD {bad_ref}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG).write_bytes(pickle.dumps({**config, "good": good}))
    tree = out_dir / "worktree"
    _git(root, "worktree", "add", "--detach", str(tree), bad)
    try:
        _git(tree, "bisect", "start", bad, good)
        proc = subprocess.run(
            ["git", "-C", str(tree), "bisect", "run", *_step_command(out_dir)],
            capture_output=True,
            text=True,
            env=_step_env(),
            check=False,
        )
        (out_dir / "bisect-run.log").write_text(proc.stdout + proc.stderr)
        found = _first_bad(proc.stdout)
        if found.get("first_bad") and not (out_dir / "steps" / found["first_bad"]).exists():
            # every measured commit was good: BAD itself is the answer, once it is measured
            _git(tree, "bisect", "reset", "--quiet", check=False)
            _git(tree, "checkout", "--quiet", "--detach", found["first_bad"])
            subprocess.run(_step_command(out_dir), cwd=tree, env=_step_env(), check=False)
    finally:
        _git(tree, "bisect", "reset", "--quiet", check=False)
        _git(root, "worktree", "remove", "--force", str(tree), check=False)
        _git(root, "worktree", "prune", check=False)
    first = found.get("first_bad") or ""
    subject = _git(root, "log", "-1", "--format=%s", first, check=False).stdout if first else ""
    return {**found, "subject": subject.strip(), "good": good, "bad": bad,
            "steps": steps_taken(out_dir)}  # fmt: skip


def _first_bad(output: str) -> dict[str, Any]:
    match = re.search(r"^([0-9a-f]{40}) is the first bad commit", output, re.MULTILINE)
    if match:
        return {"first_bad": match.group(1), "candidates": [match.group(1)]}
    if "only 'skip'ped commits left" in output:
        return {"first_bad": None, "candidates": re.findall(r"^([0-9a-f]{40})$", output, re.M)}
    lines = output.strip().splitlines()
    raise BisectError(f"git bisect run: {lines[-1] if lines else 'no output'}")


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=".", help="repository. Default: %(default)r")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each side per A/B. Default: %(default)r"
    )
    parser.add_argument("--out", default=None, help="folder for the steps. Default: a temp dir")
    parser.add_argument("--json", metavar="FILE", help="write the outcome and the steps as JSON")
    for name, kwargs in gate.gate_options():
        parser.add_argument(f"--{name}", **kwargs)


def add_bisect_arguments(parser: argparse.ArgumentParser) -> None:
    _add_options(parser)
    parser.add_argument("good", help="a commit without the regression, e.g. v0.2.0")
    parser.add_argument("bad", help="a commit with it, e.g. HEAD")
    parser.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="[OPTIONS] [-- PYTEST_ARGS]",
        help="options may also follow GOOD BAD; after --: arguments for every pytest run, "
        "e.g. -- -k infer --gpt2-rounds 10",
    )


def _split_rest(args: argparse.Namespace) -> list[str]:
    """Options after GOOD BAD (argparse's remainder takes them) are parsed here; what follows
    `--` goes to pytest. argparse drops a `--` that comes right after BAD: then the remainder is
    all pytest's unless it starts with an option of ours."""
    rest = list(args.rest)
    late = argparse.ArgumentParser(prog="gpt2-bench bisect GOOD BAD", add_help=False)
    _add_options(late)
    ours = {o for action in late._actions for o in action.option_strings}
    if "--" in rest:
        cut = rest.index("--")
    else:
        cut = len(rest) if rest and rest[0].split("=")[0] in ours else 0
    if rest[:cut]:
        defaults = argparse.Namespace(**vars(args))
        late.parse_args(rest[:cut], namespace=defaults)
        vars(args).update(vars(defaults))
    return rest[cut + 1 :] if "--" in rest else rest[cut:]


def run_bisect(args: argparse.Namespace) -> int:
    pytest_args = _split_rest(args)
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="gpt2-bench-bisect-")).resolve()
    try:
        if args.repeats < 1:
            raise BisectError(f"--repeats must be at least 1, got {args.repeats}")
        config = {
            "repeats": args.repeats,
            "pytest_args": pytest_args,
            "settings": gate.settings_from(lambda dest: getattr(args, dest)),
        }
        outcome = bisect(Path(args.repo), args.good, args.bad, out_dir, config)
    except (BisectError, ab.AbError, ValueError) as err:
        print(f"gpt2-bench bisect: error: {err}", file=sys.stderr)
        return 2
    status = _report(outcome, out_dir)
    if args.json:
        text = json.dumps({**outcome, "exit_code": status}, indent=2) + "\n"
        files.atomic_write_text(Path(args.json), text)
    return status


def _report(outcome: dict[str, Any], out_dir: Path) -> int:
    n = len(outcome["steps"])
    first = outcome.get("first_bad")
    if not first:
        print(f"gpt2-bench bisect: after {n} A/B run(s) only skipped commits are left; the first")
        print("bad commit is one of: " + ", ".join(c[:12] for c in outcome["candidates"]))
        return 3
    record = out_dir / "steps" / first
    verdict = (record / "verdict").read_text().strip() if (record / "verdict").exists() else "?"
    if verdict == "skip":
        reason = (record / "reason.txt").read_text().strip()
        print(f"gpt2-bench bisect: BAD {first[:12]} could not be judged against GOOD ({reason})")
        return 3
    if verdict != "bad":
        print(f"gpt2-bench bisect: BAD {first[:12]} does not regress against GOOD (it passes)")
        return 1
    print(f"first bad commit: {first} {outcome['subject']}".rstrip())
    print(f"({n} A/B run(s) against GOOD {outcome['good'][:12]}; steps in {out_dir})")
    print((record / "table.txt").read_text().rstrip())
    return 0


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "--step":
        return step(Path(argv[1]))
    print("usage: python -m gpt2_fixtures.results.bisect --step OUT_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
