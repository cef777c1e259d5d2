"""History input: result files -> commits in time order -> one series per device and benchmark.

Pure JSON (no torch, no pytest). A pytest-benchmark storage folder, a folder of JSON files and a
list of files are read alike; files of one commit on one device become one point (their rounds
are pooled), so a rerun of a commit adds samples, not a fake change point.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpt2_fixtures.results import files, fingerprint

# fingerprint keys that decide which results belong to one series: the device and the CPU's
# threads set the speed; library versions do not split a series (a torch bump is news)
DEVICE_KEYS = ("device", "device_name", "device_count", "cpu_model", "cpu_threads")


@dataclass(frozen=True)
class Point:
    """One commit on one device: the result documents measured there."""

    commit: str  # full SHA, or "" when the results carry no commit_info
    when: datetime  # commit time (commit_info.time), else the run's datetime
    label: str  # short SHA, or the run's date when there is no commit
    docs: tuple[Mapping[str, Any], ...]
    dirty: bool = False


@dataclass(frozen=True)
class DeviceGroup:
    key: tuple[Any, ...]
    label: str  # e.g. "cuda NVIDIA H100 80GB HBM3 x1" or "cpu AMD EPYC (2 threads)"
    points: tuple[Point, ...]  # oldest first


# --- reading ----------------------------------------------------------------------------------


def load_inputs(paths: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Validated documents of the files named and of every *.json below the folders named,
    with notes on files left out; files.UnusableInput on the first unusable file."""
    docs: list[dict[str, Any]] = []
    notes: list[str] = []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            docs.append(files.load_result(path))  # says why when missing or no result
            continue
        for found in sorted(p for p in path.rglob("*.json") if p.is_file()):
            doc = _folder_result(found, notes)
            if doc is not None:
                docs.append(doc)
    if not docs:
        raise files.UnusableInput("no result files found in the paths given")
    return docs, notes


def _folder_result(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """In a folder, JSON that is no benchmark result at all (a gate verdict, a history.json) is
    left out with a note; a damaged result is not: load_result says what is wrong with it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return files.load_result(path)  # raises with the reason
    if not (isinstance(doc, dict) and "benchmarks" in doc):
        notes.append(f"{path}: not a pytest-benchmark result, left out")
        return None
    files.validate_result(doc, str(path))
    return doc


# --- ordering and grouping --------------------------------------------------------------------


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def commit_of(doc: Mapping[str, Any]) -> tuple[str, datetime, bool]:
    """(sha, time, dirty): commit_info's id and time, falling back to the run's datetime."""
    raw = doc.get("commit_info")
    info: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    sha = str(info.get("id") or "")
    when = _parse_time(info.get("time")) or _parse_time(info.get("author_time"))
    when = when or _parse_time(doc.get("datetime"))
    if when is None:
        raise files.UnusableInput("a result has neither commit_info.time nor datetime to order by")
    return sha, when, bool(info.get("dirty"))


def device_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    fp = fingerprint.fingerprint(doc)
    return tuple(fp.get(k) for k in DEVICE_KEYS)


def device_label(key: tuple[Any, ...]) -> str:
    facts = dict(zip(DEVICE_KEYS, key, strict=True))
    label = fingerprint.device_label(facts)
    if facts["device"] == "cpu" and facts["cpu_threads"]:
        threads = facts["cpu_threads"]
        return f"{label} ({threads} thread{'s' if threads != 1 else ''})"
    return f"{label} x{facts['device_count']}" if facts["device_count"] else label


def group_by_device(docs: Iterable[Mapping[str, Any]]) -> list[DeviceGroup]:
    """Devices never share a series; within a device, one point per commit, oldest first."""
    by_device: dict[tuple[Any, ...], dict[str, list[Mapping[str, Any]]]] = {}
    for doc in docs:
        sha, when, _ = commit_of(doc)
        # without a commit, each run is its own point, keyed by its time
        by_device.setdefault(device_key(doc), {}).setdefault(sha or when.isoformat(), []).append(
            doc
        )
    groups = []
    for key, by_commit in by_device.items():
        points = sorted((_point(d) for d in by_commit.values()), key=lambda p: p.when)
        groups.append(DeviceGroup(key, device_label(key), tuple(points)))
    return sorted(groups, key=lambda g: g.label)


def _point(docs: list[Mapping[str, Any]]) -> Point:
    facts = [commit_of(d) for d in docs]
    sha = facts[0][0]
    when = min(f[1] for f in facts)
    label = sha[:7] if sha else when.strftime("%Y-%m-%d %H:%M")
    return Point(sha, when, label, tuple(docs), any(f[2] for f in facts))


# --- --since ------------------------------------------------------------------------------------


def since_time(ref: str, groups: Sequence[DeviceGroup], repo: str = ".") -> datetime:
    """The time REF stands for: a commit in the results (SHA prefix), an ISO date, or a git ref
    of the repository; files.UnusableInput when it is none of them."""
    ref_l = ref.lower()
    for group in groups:
        for point in group.points:
            if point.commit and len(ref_l) >= 4 and point.commit.lower().startswith(ref_l):
                return point.when
    when = _parse_time(ref)
    if when is not None:
        return when
    proc = subprocess.run(
        ["git", "-C", repo, "show", "-s", "--format=%cI", f"{ref}^{{commit}}", "--"],
        capture_output=True,
        text=True,
        check=False,
    )
    when = _parse_time(proc.stdout.strip()) if proc.returncode == 0 else None
    if when is None:
        raise files.UnusableInput(
            f"--since {ref}: not a commit of these results, an ISO date or a git ref here"
        )
    return when


def keep_since(groups: Sequence[DeviceGroup], when: datetime) -> list[DeviceGroup]:
    kept = [
        DeviceGroup(g.key, g.label, tuple(p for p in g.points if p.when >= when)) for g in groups
    ]
    return [g for g in kept if g.points]


# --- one benchmark's entries ------------------------------------------------------------------


def benchmark_keys(group: DeviceGroup) -> list[tuple[str, str]]:
    """(fullname, model) of every benchmark in the group, in first-seen order: one model preset
    per series, since `tiny` and `gpt2` share ids."""
    seen: dict[tuple[str, str], None] = {}
    for point in group.points:
        for doc in point.docs:
            for bench in doc["benchmarks"]:
                seen.setdefault(series_key(bench), None)
    return list(seen)


def series_key(bench: Mapping[str, Any]) -> tuple[str, str]:
    return bench["fullname"], str((bench.get("extra_info") or {}).get("model") or "")


def entries_at(point: Point, key: tuple[str, str]) -> list[Mapping[str, Any]]:
    return [b for d in point.docs for b in d["benchmarks"] if series_key(b) == key]
