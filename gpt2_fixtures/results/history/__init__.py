"""`gpt2-bench history`: when did a benchmark change, over a series of result files.

``series`` loads and orders result files by commit and device; ``detect`` finds the change points
the gate confirms; ``analysis`` runs it over every series; ``render`` writes history.md, JSON and
plots; ``cli`` is the subcommand. Pure JSON and numpy: no torch, no pytest. See docs/history.md.
"""
