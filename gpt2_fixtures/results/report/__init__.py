"""Summary tables and plots from pytest-benchmark result files.

``cases`` turns ``benchmarks[]`` entries into rows and computes speedups and changes with their
intervals; ``tables`` holds the table model, its console and Markdown renderers and the console
summary; ``plots`` draws the PNGs (matplotlib only when drawing); ``document`` writes report.md
and runs ``gpt2-bench report``. Nothing here imports torch or pytest. Each name is imported
from its module (docs/architecture.md, "One import path per name").
"""
