"""Merging shard result files: concatenation, refusals with one clear line, atomic writes."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gpt2_fixtures.results import files
from gpt2_fixtures.results.files import UnusableInput
from gpt2_fixtures.results.merge import add_merge_arguments, merge_results, run_merge


def _merge(out: str | Path, *inputs: str | Path, force: bool = False) -> int:
    """`gpt2-bench merge -o OUT [--force] INPUTS...`"""
    parser = argparse.ArgumentParser()
    add_merge_arguments(parser)
    argv = ["-o", str(out), *(["--force"] if force else []), *(str(a) for a in inputs)]
    return run_merge(parser.parse_args(argv))


def _bench(name: str) -> dict[str, Any]:
    return {
        "group": None,
        "name": name,
        "fullname": f"benchmarks/test_training.py::{name}",
        "params": {"case": name},
        "stats": {"median": 0.01, "mean": 0.01, "rounds": 3, "data": [0.01, 0.011, 0.009]},
        "extra_info": {"phase": "train", "tokens_per_s": 1000.0},
    }


def _result(device_name: str | None, *names: str, commit: str = "abc") -> dict[str, Any]:
    gpt2 = {} if device_name is None else {"device": "cuda:0", "device_name": device_name}
    return {
        "machine_info": {"node": "runner", "gpt2": gpt2},
        "commit_info": {"id": commit},
        "benchmarks": [_bench(name) for name in names],
        "datetime": "2026-01-01T00:00:00",
        "version": "5.3.1",
    }


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_merge_concatenates_in_file_order_and_keeps_first_metadata() -> None:
    first = _result("NVIDIA H200", "test_train[a]", "test_train[b]", commit="c1")
    second = _result("NVIDIA H200", "test_infer[c]", commit="c1")
    second["machine_info"]["node"] = "other-runner"
    merged = merge_results([("1.json", first), ("2.json", second)])
    assert [b["name"] for b in merged["benchmarks"]] == [
        "test_train[a]",
        "test_train[b]",
        "test_infer[c]",
    ]
    assert merged["machine_info"]["node"] == "runner"
    assert merged["commit_info"] == {"id": "c1"}
    assert merged["version"] == "5.3.1"
    # The inputs are not modified.
    assert len(first["benchmarks"]) == 2


def test_merge_refuses_duplicate_fullname() -> None:
    first = _result("cpu-model", "test_train[a]")
    second = _result("cpu-model", "test_train[a]")
    with pytest.raises(UnusableInput, match=r"'benchmarks/test_training.py::test_train\[a\]'"):
        merge_results([("1.json", first), ("2.json", second)])


@pytest.mark.parametrize(
    ("name_a", "name_b", "shown"),
    [
        ("NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"),
        ("NVIDIA H200", None, "an unrecorded device"),
    ],
)
def test_merge_refuses_different_devices(name_a: str, name_b: str | None, shown: str) -> None:
    with pytest.raises(UnusableInput) as info:
        merge_results([("1.json", _result(name_a, "x[a]")), ("2.json", _result(name_b, "x[b]"))])
    message = str(info.value)
    assert "different devices" in message
    assert "NVIDIA H200" in message and shown in message
    assert "\n" not in message


def test_merge_of_nothing_is_an_error() -> None:
    with pytest.raises(UnusableInput, match="at least one"):
        merge_results([])


def test_run_merge_writes_merged_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "shard-1.json", _result("NVIDIA H200", "t[a]"))
    b = _write(tmp_path / "shard-2.json", _result("NVIDIA H200", "t[b]", "t[c]"))
    out = tmp_path / "merged.json"
    assert _merge(out, a, b) == 0
    merged = json.loads(out.read_text(encoding="utf-8"))
    assert [x["name"] for x in merged["benchmarks"]] == ["t[a]", "t[b]", "t[c]"]
    assert "merged 3 benchmarks from 2 files" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("", "empty file"),
        ("[]", "not a pytest-benchmark result"),
        ('{"machine_info": {}}', "no 'benchmarks' list"),
        ('{"benchmarks": []}', "holds no benchmarks"),
        ('{"benchmarks": [{"name": "x"}], "machine_info": {}}', "has no 'fullname'"),
    ],
)
def test_run_merge_unusable_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, reason: str
) -> None:
    good = _write(tmp_path / "good.json", _result("cpu", "t[a]"))
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    out = tmp_path / "merged.json"
    assert _merge(out, good, bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpt2-bench merge: error:") and str(bad) in err and reason in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_run_merge_missing_file_and_device_mismatch_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path / "a.json", _result("NVIDIA H200", "t[a]"))
    assert _merge(tmp_path / "o.json", a, tmp_path / "missing.json") == 2
    assert "missing.json: no such file" in capsys.readouterr().err
    b = _write(tmp_path / "b.json", _result("NVIDIA L4", "t[b]"))
    assert _merge(tmp_path / "o.json", a, b) == 2
    err = capsys.readouterr().err
    assert "different devices" in err and "NVIDIA L4" in err
    assert not (tmp_path / "o.json").exists()


def test_failed_merge_keeps_previous_output(tmp_path: Path) -> None:
    out = _write(tmp_path / "merged.json", {"previous": True})
    a = _write(tmp_path / "a.json", _result("cpu", "t[a]"))
    assert _merge(out, a, a, force=True) == 2  # duplicate benchmark
    assert json.loads(out.read_text(encoding="utf-8")) == {"previous": True}


def test_failed_write_keeps_previous_output_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _write(tmp_path / "merged.json", {"previous": True})
    a = _write(tmp_path / "a.json", _result("cpu", "t[a]"))

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    assert _merge(out, a, force=True) == 2
    assert "cannot write" in capsys.readouterr().err
    assert json.loads(out.read_text(encoding="utf-8")) == {"previous": True}
    assert sorted(os.listdir(tmp_path)) == ["a.json", "merged.json"]


def test_merge_writes_into_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.json", _result("cpu", "t[a]"))
    assert _merge("out.json", "a.json") == 0
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))["benchmarks"]


def test_merge_needs_at_least_one_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _merge("out.json")
    assert info.value.code == 2
    assert "inputs" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The output is named, and an existing file is not replaced by accident


def test_two_positional_files_are_both_inputs_and_need_an_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gpt2-bench merge a.json b.json` used to overwrite a.json with b.json's cases."""
    a = _write(tmp_path / "a.json", _result("cpu", "t[a]", "t[b]"))
    b = _write(tmp_path / "b.json", _result("cpu", "t[c]"))
    before = a.read_text(encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_merge_arguments(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args([str(a), str(b)])
    assert info.value.code == 2 and "-o" in capsys.readouterr().err
    assert a.read_text(encoding="utf-8") == before


def test_existing_output_is_kept_unless_remerged_or_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path / "a.json", _result("cpu", "t[a]", "t[b]"))
    b = _write(tmp_path / "b.json", _result("cpu", "t[c]"))
    before = a.read_text(encoding="utf-8")
    assert _merge(a, b) == 2  # the output is an existing result, not a merge of b
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert a.read_text(encoding="utf-8") == before
    out = tmp_path / "merged.json"
    assert _merge(out, a, b) == 0
    assert _merge(out, a, b) == 0  # the same inputs again: replacing is what was asked
    assert _merge(out, b) == 2  # other inputs: refused
    assert len(json.loads(out.read_text(encoding="utf-8"))["benchmarks"]) == 3
    assert _merge(out, b, force=True) == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))["benchmarks"]) == 1


def test_remerge_is_recognised_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shards").mkdir()
    a = _write(tmp_path / "shards" / "1.json", _result("cpu", "t[a]"))
    out = tmp_path / "merged.json"
    assert _merge(out, a) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["merged_from"] == ["shards/1.json"]
    monkeypatch.chdir(tmp_path / "shards")
    assert _merge("../merged.json", "1.json") == 0


# --------------------------------------------------------------------------------------------
# The gpt2_bench section of the shards (docs/distributed.md)


def _section(failed: list[str], not_selected: list[str]) -> dict[str, Any]:
    return {
        "version": "0.3.0",
        "failed": [
            {"name": n.split("::")[-1], "fullname": n, "kind": "error", "reason": "boom"}
            for n in failed
        ],
        "not_selected": not_selected,
    }


def test_gpt2_bench_section_is_merged() -> None:
    t = "benchmarks/test_training.py::"
    first = _result("cpu", "test_train[a]")
    second = _result("cpu", "test_train[b]")
    # Shard 1 ran a, failed f1, deselected b, c, d; shard 2 ran b, failed f2, deselected a, c, f1.
    first["gpt2_bench"] = _section([t + "f1"], [t + "test_train[b]", t + "c", t + "d"])
    second["gpt2_bench"] = _section([t + "f2"], [t + "test_train[a]", t + "c", t + "f1"])
    merged = merge_results([("1.json", first), ("2.json", second)])
    section = merged["gpt2_bench"]
    assert [f["fullname"] for f in section["failed"]] == [t + "f1", t + "f2"]
    assert section["not_selected"] == [t + "c"]  # d was selected (and passed or failed) by 2
    assert section["version"] == "0.3.0"


def test_files_without_the_section_merge_without_one() -> None:
    merged = merge_results([("1.json", _result("cpu", "t[a]")), ("2.json", _result("cpu", "t[b]"))])
    assert "gpt2_bench" not in merged


def test_scaling_efficiency_is_filled_without_torch() -> None:
    """The arithmetic lives in results/scaling.py."""
    from gpt2_fixtures.results import merge, scaling

    assert merge.fill_scaling_efficiency is scaling.fill_scaling_efficiency
    infos = [
        {"strategy": "ddp", "world_size": w, "tokens_per_s": t, "scaling_efficiency": None}
        for w, t in ((1, 1000.0), (2, 1600.0))
    ]
    benches = [{"extra_info": i} for i in infos]
    assert scaling.fill_scaling_efficiency(benches) == 2
    assert [i["scaling_efficiency"] for i in infos] == [1.0, 0.8]
