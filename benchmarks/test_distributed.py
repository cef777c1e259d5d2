"""Distributed training step: DDP and FSDP2 over optimization x batch x length x world size.

Run under torchrun (docs/distributed.md); with plain pytest every case is skipped with how to run
it. All ranks run every case; ranks beyond a case's world size wait; rank 0 records.
"""

import math

import pytest

from gpt2_fixtures.bench import distributed


@pytest.mark.distributed
@pytest.mark.train
def test_train_distributed(benchmark, gpt2_dist_case, gpt2_bench, gpt2_world):
    with gpt2_world.case(gpt2_dist_case) as group:
        if group is None:
            pytest.skip(f"rank {gpt2_world.rank} sits out world size {gpt2_dist_case.world_size}")
        info = distributed.train(benchmark, gpt2_bench, gpt2_world, gpt2_dist_case, group)
    benchmark.extra_info.update(info)
    # A step that did not train (NaN/inf loss) must fail, not report a time.
    assert info["loss"] is not None and math.isfinite(info["loss"]), f"loss is {info['loss']}"
    # DDP replicas that drifted apart measured something other than data-parallel training.
    checksums = info["param_checksums"]
    assert checksums is None or len(set(checksums)) == 1, f"DDP replicas differ: {checksums}"
