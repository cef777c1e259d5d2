#!/usr/bin/env python3
"""stack-diff.py BASE_DIR HEAD_DIR PATH...: does a pull request change the stack, and which pins?

plan.sh downloads each stack file that the pull request's compare lists (PATH, relative to the
repository root) as it is at the base commit into BASE_DIR and at the head into HEAD_DIR; a file
missing on one side was added or removed. Standard library only; the files are the pull request's
data and are only parsed, never executed (Python 3.11+: tomllib). Prints, for $GITHUB_OUTPUT:

  stack=changed|same
  stack_pins=<one line: which pins changed, e.g. "torch 2.13.0 -> 2.14.0, triton 3.5.0 -> 3.6.0">

What counts (docs/ci.md, "A pull request that bumps the stack"):
- a lock or constraints file (`*.txt`): its requirement lines (pins, hashes, options; comments and
  blank lines ignored); the summary lists the `name==version` pins that changed;
- `pyproject.toml`: only `[project] dependencies` and `[project.optional-dependencies]` (a new
  version number or description is not a stack change); a file that does not parse counts;
- any other stack file (`.github/requirements/gpu.in`): any change of its requirement lines.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import tomllib

GPU_LOCK = ".github/requirements/gpu.txt"
MAX_PINS = 12  # pins listed per file; the rest are counted
MAX_LINE = 500  # the whole summary, cut with "…"
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def _safe(text: str, allowed: str = r"A-Za-z0-9._+!-", limit: int = 60) -> str:
    """A value from the pull request's files, reduced to inert characters (it reaches outputs,
    the status and the comment): no newline, no markup, short."""
    return re.sub(f"[^{allowed}]", "", text)[:limit] or "?"


def requirement_lines(text: str) -> list[str]:
    """The logical requirement lines (continuations joined, comments and blanks dropped)."""
    joined = re.sub(r"\\\r?\n", " ", text)
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines())
    return [" ".join(line.split()) for line in lines if line]


def pins(text: str) -> dict[str, str]:
    """{normalised name: version} of the `name==version` lines of a lock or constraints file."""
    found: dict[str, str] = {}
    for line in requirement_lines(text):
        if match := _PIN.match(line):
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def pin_changes(base: dict[str, str], head: dict[str, str]) -> list[str]:
    """'torch 2.13.0 -> 2.14.0', 'foo (new) 1.0', 'bar 2.0 (removed)', sorted by name."""
    changes = []
    for name in sorted(base.keys() | head.keys()):
        old, new = base.get(name), head.get(name)
        if old == new:
            continue
        if old is None:
            changes.append(f"{_safe(name)} (new) {_safe(str(new))}")
        elif new is None:
            changes.append(f"{_safe(name)} {_safe(old)} (removed)")
        else:
            changes.append(f"{_safe(name)} {_safe(old)} -> {_safe(new)}")
    if len(changes) > MAX_PINS:
        changes = [*changes[:MAX_PINS], f"…and {len(changes) - MAX_PINS} more"]
    return changes


def dependencies(text: str | None) -> dict[str, list[str]] | None:
    """pyproject.toml's dependency tables, {'dependencies': [...], 'extra NAME': [...]};
    None when the file does not parse (then any change counts)."""
    if text is None:
        return {}
    try:
        project: Any = tomllib.loads(text).get("project", {})
    except tomllib.TOMLDecodeError:
        return None
    if not isinstance(project, dict):
        return None
    tables: dict[str, list[str]] = {"dependencies": list(project.get("dependencies") or [])}
    extras = project.get("optional-dependencies") or {}
    for extra, deps in extras.items() if isinstance(extras, dict) else []:
        tables[f"[{extra}]"] = list(deps or [])
    return tables


def pyproject_change(base: str | None, head: str | None) -> str:
    """'' when the dependency tables are equal, else '-torch>=2.13 +torch>=2.14' and the like."""
    old, new = dependencies(base), dependencies(head)
    if old is None or new is None:
        return "does not parse as TOML on one side" if base != head else ""
    if old == new:
        return ""
    words = []
    spec = r"A-Za-z0-9._+!<>=~,*\[\]-"
    for table in sorted(old.keys() | new.keys(), key=lambda t: (t != "dependencies", t)):
        before, after = set(old.get(table, [])), set(new.get(table, []))
        removed = [f"-{_safe(d.replace(' ', ''), spec)}" for d in sorted(before - after)]
        added = [f"+{_safe(d.replace(' ', ''), spec)}" for d in sorted(after - before)]
        if removed or added:
            words.append(" ".join([_safe(table, spec), *removed, *added]))
    return ", ".join(words)  # "" when only their order changed


def _read(root: Path, path: str) -> str | None:
    file = root / path
    return file.read_text(encoding="utf-8", errors="replace") if file.is_file() else None


def file_change(path: str, base: str | None, head: str | None) -> str:
    """What changed in one stack file, in words; '' when nothing that counts changed."""
    if path == "pyproject.toml":
        return pyproject_change(base, head)
    if base is not None and head is not None:
        if requirement_lines(base) == requirement_lines(head):
            return ""  # comments or blank lines only
    elif base is None and head is None:
        return ""
    if path.endswith(".txt"):
        changes = pin_changes(pins(base or ""), pins(head or ""))
        if changes:
            return ", ".join(changes)
    if base is None:
        return "added"
    return "removed" if head is None else "changed (hashes or options only)"


def summary(base_dir: Path, head_dir: Path, paths: list[str]) -> str:
    """One line: the GPU lock's pin changes first, then each other file by name; '' if none."""
    parts = []
    ordered = sorted(set(paths), key=lambda p: (p != GPU_LOCK, p))
    for path in ordered:
        said = file_change(path, _read(base_dir, path), _read(head_dir, path))
        if said:
            name = _safe(path, r"A-Za-z0-9._/-", 80)
            parts.append(said if path == GPU_LOCK else f"{name}: {said}")
    line = "; ".join(parts)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: stack-diff.py BASE_DIR HEAD_DIR [PATH...]", file=sys.stderr)
        return 2
    line = summary(Path(argv[1]), Path(argv[2]), argv[3:])
    print(f"stack={'changed' if line else 'same'}")
    print(f"stack_pins={line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
