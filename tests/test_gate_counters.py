"""The exact tier of the gate (results/gate/counters.py) on synthetic result entries: counters
judged by equality on one stack, named in the note, tolerances through --threshold."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from helpers import result_entry

from gpt2_fixtures.results import comment, files, gate, pooling, tracking
from gpt2_fixtures.results.metrics import COUNTERS
from gpt2_fixtures.results.report import tables
from gpt2_fixtures.results.report.cases import cases_from_benchmarks

OPS = {"aten::_local_scalar_dense": 29, "aten::item": 29, "aten::mm": 100, "aten::add": 40}


def counted(ops: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    """An entry of the suite's layout with the profiled step's counters."""
    ops = dict(OPS if ops is None else ops)
    info: dict[str, Any] = {
        "ops_per_step": sum(ops.values()),
        "host_syncs_per_step": ops.get("aten::_local_scalar_dense", 0),
        "allocs_per_step": 596,
        "ops_by_name": ops,
        "control_round_s": [0.1] * 5,
        "control_kind": "twin-train",
    }
    return result_entry(**(info | extra))


def doc(*entries: dict[str, Any], torch: str = "2.13.0") -> dict[str, Any]:
    gpt2 = {"device": "cpu", "device_name": "cpu", "torch": torch, "cpu_model": "x"}
    return {"machine_info": {"gpt2": gpt2}, "benchmarks": list(entries)}


def judge(base: dict[str, Any], cur: dict[str, Any], *specs: str, **kw: Any) -> gate.GateResult:
    thresholds = gate.Thresholds().override([gate.parse_threshold(s) for s in specs])
    settings = gate.GateSettings(thresholds=thresholds)
    return gate.gate_documents(base, cur, settings, **kw)


def row(result: gate.GateResult, metric: str) -> gate.Row:
    (found,) = [r for r in result.rows if r.metric == metric]
    return found


def two_more_reads() -> dict[str, int]:
    ops = dict(OPS)
    ops["aten::_local_scalar_dense"] += 2
    ops["aten::item"] += 2
    return ops


def test_identical_counters_pass_with_no_statistics():
    result = judge(doc(counted()), doc(counted()))
    for metric in ("ops_per_step", "host_syncs_per_step", "allocs_per_step"):
        r = row(result, metric)
        assert (r.verdict, r.change, r.p_value, r.threshold) == (gate.PASS, 0.0, None, "0%")
    assert result.exit_code == 0


def test_two_more_host_reads_fail_and_the_note_names_the_operator():
    result = judge(doc(counted()), doc(counted(two_more_reads())))
    syncs = row(result, "host_syncs_per_step")
    assert syncs.verdict == gate.REGRESSION
    assert syncs.note.startswith("host_syncs_per_step 29 -> 31; aten::_local_scalar_dense 29 -> 31")
    assert "aten::item 29 -> 31 per step" in syncs.note
    assert row(result, "ops_per_step").verdict == gate.REGRESSION
    assert row(result, "time").verdict == gate.PASS  # the same rounds: time is not the news
    assert result.exit_code == 1


def test_a_decrease_is_improved_and_asks_for_a_new_baseline():
    fewer = dict(OPS, **{"aten::mm": 90})
    r = row(judge(doc(counted()), doc(counted(fewer))), "ops_per_step")
    assert r.verdict == gate.IMPROVED
    assert "record it again (gpt2-bench baseline" in r.note and "aten::mm 100 -> 90" in r.note


def test_the_note_lists_the_largest_changes_first_and_counts_the_rest():
    more = {k: v + i for i, (k, v) in enumerate(OPS.items(), start=1)} | {"aten::new": 7}
    note = row(judge(doc(counted()), doc(counted(more))), "ops_per_step").note
    assert "aten::new 0 -> 7, aten::add 40 -> 44, aten::mm 100 -> 103 per step" in note
    assert "(+2 more operators)" in note


def test_a_tolerance_through_threshold_and_operators_as_information_only():
    more = dict(OPS, **{"aten::add": 42})  # 198 -> 200 ops: +1%
    base, cur = doc(counted()), doc(counted(more))
    assert row(judge(base, cur, "ops_per_step=5%"), "ops_per_step").verdict == gate.PASS
    assert (
        "within the tolerance 5%" in row(judge(base, cur, "ops_per_step=5%"), "ops_per_step").note
    )
    info = row(judge(base, cur, "ops_per_step=info"), "ops_per_step")
    assert info.verdict == gate.PASS and info.threshold == "information only"
    assert info.note.startswith("information only: ops_per_step 198 -> 200")
    per_bench = row(judge(base, cur, "test_train*@ops_per_step=info"), "ops_per_step")
    assert per_bench.verdict == gate.PASS
    # a floor in counts: 2 more operators are within 0%:2
    assert row(judge(base, cur, "ops_per_step=0%:2"), "ops_per_step").verdict == gate.PASS


def test_host_syncs_fail_at_any_increase_even_beside_a_tolerance_for_operators():
    result = judge(doc(counted()), doc(counted(two_more_reads())), "ops_per_step=info")
    assert row(result, "host_syncs_per_step").verdict == gate.REGRESSION
    assert row(result, "ops_per_step").verdict == gate.PASS


def test_counters_from_another_torch_are_not_compared():
    result = judge(doc(counted()), doc(counted(two_more_reads()), torch="2.14.0"))
    r = row(result, "host_syncs_per_step")
    assert r.verdict == gate.NA
    assert r.note == "not compared: counters depend on the stack (torch 2.13.0 -> 2.14.0)"
    assert not result.regressions or all(
        x.metric not in ("ops_per_step",) for x in result.regressions
    )


def test_counters_from_another_device_are_not_compared():
    other = doc(counted(two_more_reads()))
    other["machine_info"]["gpt2"]["device_name"] = "another cpu"
    result = judge(doc(counted()), other, allow_device_mismatch=True)
    assert row(result, "host_syncs_per_step").verdict == gate.NA
    assert "depend on the device" in row(result, "host_syncs_per_step").note


def test_a_baseline_without_counters_gives_one_new_row_not_a_failure():
    old = result_entry(control_round_s=[0.1] * 5, control_kind="twin-train")
    result = judge(doc(old), doc(counted(two_more_reads())))
    r = row(result, "counters")
    assert r.verdict == gate.NEW and "not recorded in the baseline" in r.note
    assert result.exit_code == 0


def test_one_counter_new_in_the_current_run_is_new():
    base = counted()
    del base["extra_info"]["allocs_per_step"]
    r = row(judge(doc(base), doc(counted())), "allocs_per_step")
    assert r.verdict == gate.NEW and r.note == "not recorded in the baseline"


def test_compile_counters_graph_break_and_recompile_in_rounds_fail():
    comp = {"compile_graphs": 1, "compile_graph_breaks": 0, "compile_recompiles": 0}
    base = counted(**comp, recompiles_in_rounds=0)
    cur = counted(**(comp | {"compile_graphs": 2, "compile_graph_breaks": 1}))
    cur["extra_info"]["recompiles_in_rounds"] = 1
    result = judge(doc(base), doc(cur))
    assert row(result, "compile_graph_breaks").verdict == gate.REGRESSION
    assert row(result, "compile_graph_breaks").note == "compile_graph_breaks 0 -> 1"
    assert row(result, "recompiles_in_rounds").verdict == gate.REGRESSION
    assert row(result, "compile_recompiles").verdict == gate.PASS


def test_counters_are_outside_holms_family():
    # adding exact rows must not make the time tests stricter: the note counts the same tests
    plain = result_entry(control_round_s=[0.1] * 5, control_kind="twin-train")
    notes = [n for n in judge(doc(plain), doc(plain)).notes if "Holm" in n]
    with_counters = [n for n in judge(doc(counted()), doc(counted())).notes if "Holm" in n]
    assert notes == with_counters


def test_counters_validate_as_counts_and_the_operator_map_as_an_object():
    ok = doc(counted(host_syncs_per_step=0))
    files.validate_result(ok, "ok.json")  # zero syncs is a count, not a bad number
    bad = copy.deepcopy(ok)
    bad["benchmarks"][0]["extra_info"]["ops_by_name"] = {"aten::mm": -1}
    with pytest.raises(files.UnusableInput, match=r"ops_by_name\['aten::mm'\] is -1"):
        files.validate_result(bad, "bad.json")
    bad["benchmarks"][0]["extra_info"]["ops_by_name"] = [1]
    with pytest.raises(files.UnusableInput, match="ops_by_name is not an object"):
        files.validate_result(bad, "bad.json")


def test_pooled_processes_keep_the_counters():
    a, b = doc(counted()), doc(counted())
    pooled = pooling.pool_results([a, b], "a.json")["benchmarks"][0]["extra_info"]
    assert pooled["host_syncs_per_step"] == 29 and pooled["ops_by_name"] == OPS


def test_the_verdict_json_and_markdown_carry_the_counter_rows():
    result = judge(doc(counted()), doc(counted(two_more_reads())))
    rows = gate.to_json(result)["rows"]
    syncs = next(r for r in rows if r["metric"] == "host_syncs_per_step")
    assert syncs["verdict"] == "REGRESSION" and syncs["unit"] == "syncs"
    json.dumps(gate.to_json(result), allow_nan=False)
    assert "aten::_local_scalar_dense 29 -> 31" in gate.to_markdown(result)


def test_the_summary_shows_counters_in_one_column():
    cases = cases_from_benchmarks([counted()])
    table = tables.phase_table("train", cases)
    headers = [c.header for c in table.columns]
    assert "syncs · ops · allocs" in headers
    assert not {"ops per step", "host syncs per step", "allocs per step"} & set(headers)
    cell = table.rows[0][headers.index("syncs · ops · allocs")]
    assert cell == "29 · 198 · 596"


def test_the_change_table_shows_which_counters_moved():
    base = cases_from_benchmarks([counted()])
    cur = cases_from_benchmarks([counted(two_more_reads())])
    table = tables.baseline_table("train", cur, base)
    headers = [c.header for c in table.columns]
    assert headers[-1] == "Δ counters" and table.rows[0][-1] == "ops +4, syncs +2"
    same = tables.baseline_table("train", base, base)
    assert same.rows[0][-1] == "="


def test_the_pr_comment_has_one_line_for_the_counters_and_no_chart_of_them():
    result = judge(
        doc(counted(), counted(batch=4)), doc(counted(two_more_reads()), counted(batch=4))
    )
    text = comment.render(gate.to_json(result))
    line = next(x for x in text.splitlines() if x.startswith("**Exact counters**"))
    assert line == (
        "**Exact counters**: 4 of 6 rows equal to the baseline; changed: "
        "`host_syncs_per_step` in 1, `ops_per_step` in 1."
    )
    assert "host\\_syncs\\_per\\_step 29 -\\> 31; aten::\\_local\\_scalar\\_dense" in text
    assert "Other metrics that did not pass" not in text  # counters are not charted


def test_the_wandb_table_has_a_column_per_counter():
    assert {m.key for m in COUNTERS} <= set(tracking.TABLE_COLUMNS)


def test_baseline_warns_when_processes_disagree_on_a_counter():
    from gpt2_fixtures.results import baseline

    same = baseline.counter_disagreements([doc(counted()), doc(counted())])
    assert same == []
    (line,) = baseline.counter_disagreements([doc(counted()), doc(counted(allocs_per_step=600))])
    assert line.startswith("test_train[sdpa-fp32-b1-s64]: allocs_per_step differs between")
    assert "(596/600)" in line
