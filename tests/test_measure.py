"""Metric arithmetic, memory trackers and the control workload (no timing asserted)."""

import math

import pytest
import torch

from gpt2_fixtures import measure


class FakeMemory:
    kind = "fake"

    def __init__(self, peaks, reserved=None):
        self.peaks, self.reserved, self.resets = list(peaks), reserved, 0

    def reset(self):
        self.resets += 1

    def read(self):
        return self.peaks.pop(0), self.reserved


def test_mean_std():
    assert measure.mean_std([2.0]) == (2.0, 0.0)
    mean, std = measure.mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)


def test_round_metrics_from_per_round_times():
    hooks = measure.RoundHooks(FakeMemory([99.0, 10.0, 12.0, 11.0]), control=None)
    for _ in range(4):  # one warmup round + three measured rounds
        hooks.setup()
        hooks.teardown()
    times = [0.5, 0.25, 1.0]
    m = measure.round_metrics(times, samples=4, tokens=4 * 128, hooks=hooks)
    assert m["samples_per_s"] == pytest.approx((8 + 16 + 4) / 3)
    assert m["samples_per_s_std"] == pytest.approx(6.110100926607787)
    assert m["tokens_per_s"] == pytest.approx(m["samples_per_s"] * 128)
    assert m["tokens_per_s_std"] == pytest.approx(m["samples_per_s_std"] * 128)
    # The warmup round's 99 MB is dropped: only measured rounds count.
    assert m["peak_memory_mb"] == 12.0
    assert m["peak_memory_mb_std"] == pytest.approx(1.0)
    assert m["memory_kind"] == "fake" and m["peak_reserved_mb"] is None
    assert m["control_round_s"] == [] and m["time_ratio_median"] is None
    assert hooks.memory.resets == 4


def test_control_ratio_is_per_round():
    class FixedControl:
        def __init__(self):
            self.values = [9.0, 0.1, 0.2, 0.4]

        def run(self):
            return self.values.pop(0)

    hooks = measure.RoundHooks(FakeMemory([1.0] * 4, reserved=5.0), FixedControl())
    for _ in range(4):
        hooks.setup()
        hooks.teardown()
    m = measure.round_metrics([0.3, 0.2, 1.2], samples=1, tokens=10, hooks=hooks)
    assert m["control_round_s"] == [0.1, 0.2, 0.4]
    assert m["time_ratio_median"] == pytest.approx(3.0)  # ratios 3, 1, 3
    assert m["peak_reserved_mb"] == 5.0


def test_control_workload_size_depends_only_on_the_case():
    small = measure.ControlWorkload("cpu", step_flops=1e6)
    big = measure.ControlWorkload("cpu", step_flops=1e15)
    mid = measure.ControlWorkload("cpu", step_flops=4 * 20 * 2 * 384**3)
    assert (small.repeats, big.repeats, mid.repeats) == (16, 64, 20)
    assert torch.equal(small.a, big.a)  # seeded: the same matrices every run
    assert small.run() > 0


def test_approx_step_flops():
    assert measure.approx_step_flops(100, 10, "infer") == 2000
    assert measure.approx_step_flops(100, 10, "train") == 6000


def test_cpu_rss_tracker_sees_a_new_peak_after_reset():
    tracker = measure.CpuRssTracker()
    assert tracker.kind in ("cpu_rss", "cpu_rss_lifetime")
    tracker.reset()
    before, reserved = tracker.read()
    assert reserved is None and before > 0
    blob = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    blob += 1
    after, _ = tracker.read()
    del blob
    assert after >= before + 32  # at least half of it shows up in the high-water mark
    if tracker.kind == "cpu_rss":
        tracker.reset()
        again, _ = tracker.read()
        assert again < after  # the reset brought the mark back down


def test_memory_tracker_kind_per_device():
    assert measure.memory_tracker("cpu").kind.startswith("cpu_rss")
    assert measure.CudaMemoryTracker.kind == "cuda_allocated"


def test_finite_or_none():
    assert measure.finite_or_none(1.5) == 1.5
    assert measure.finite_or_none(math.nan) is None
    assert measure.finite_or_none(None) is None
