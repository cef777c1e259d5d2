"""Registers the gpt2-bench plugin for `pytest benchmarks` and `pytest tests`.

The plugin changes the process (CPU threads, host allocator, SIGTERM handler) only in a run
that collects benchmarks, so `pytest tests` runs as plain pytest would (docs/architecture.md).
"""

pytest_plugins = ["gpt2_fixtures.plugin"]
