"""A stand-in for pytest-benchmark's fixture in unit tests: pedantic's order of calls."""

from types import SimpleNamespace


class FakeBenchmark:
    """Runs warmup then timed rounds through setup/step/teardown, as pytest-benchmark's pedantic
    does; ``stats.stats.data`` gets one made-up time per timed round (0.1 s, 0.2 s, ...)."""

    def __init__(self):
        self.stats = None
        self.extra_info = {}

    def pedantic(self, step, setup, teardown, rounds, warmup_rounds, iterations):
        assert iterations == 1
        data = []
        for i in range(warmup_rounds + rounds):
            setup()
            step()
            teardown()
            if i >= warmup_rounds:
                data.append(0.1 * (len(data) + 1))
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=data))
