"""Registers the gpt2-bench plugin for `pytest benchmarks` and `pytest tests`."""

pytest_plugins = ["gpt2_fixtures.plugin"]
