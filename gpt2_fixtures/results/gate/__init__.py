"""The regression gate: compare a current pytest-benchmark result with a baseline result.

Every baseline benchmark gets a verdict; time is judged on per-round samples (and on their
ratio to the control workload), memory by effect against the baseline's spread. No pytest or
torch import here: the CLI, the plugin and tools/gate_quality.py share this package. Modules:
verdicts (verdicts, thresholds, settings, rows), stats (tests), samples (what is read from an
entry), compare (the rules), render (table, Markdown, JSON), cli (`gpt2-bench compare`, options).
See docs/gate.md for the rules and their reasons.
"""

from gpt2_fixtures.results.gate.cli import (
    DEVICE_MISMATCH_OPTION,
    add_compare_arguments,
    add_gate_arguments,
    gate_options,
    marker_overrides,
    run_compare,
    settings_from,
    settings_from_args,
)
from gpt2_fixtures.results.gate.compare import (
    NOISE_BAND_SIGMAS,
    compare,
    control_tolerance,
    gate_documents,
)
from gpt2_fixtures.results.gate.render import (
    check_output_paths,
    format_table,
    to_json,
    to_markdown,
    write_outputs,
)
from gpt2_fixtures.results.gate.samples import (
    control_kind,
    control_median,
    control_ratios,
    round_times,
)
from gpt2_fixtures.results.gate.stats import (
    Evidence,
    decide,
    min_rounds_p,
    one_sided_mean_p,
    one_sided_rounds_p,
)
from gpt2_fixtures.results.gate.verdicts import (
    DRIFT,
    IMPROVED,
    INCONCLUSIVE,
    MISSING,
    NA,
    NEW,
    NOT_SELECTED,
    PASS,
    REGRESSION,
    GateResult,
    GateSettings,
    Row,
    Threshold,
    Thresholds,
    parse_threshold,
)
from gpt2_fixtures.results.metrics import EXTRA_METRICS, METRICS, Metric

__all__ = [
    "DEVICE_MISMATCH_OPTION",
    "DRIFT",
    "EXTRA_METRICS",
    "IMPROVED",
    "INCONCLUSIVE",
    "METRICS",
    "MISSING",
    "NA",
    "NEW",
    "NOISE_BAND_SIGMAS",
    "NOT_SELECTED",
    "PASS",
    "REGRESSION",
    "Evidence",
    "GateResult",
    "GateSettings",
    "Metric",
    "Row",
    "Threshold",
    "Thresholds",
    "add_compare_arguments",
    "add_gate_arguments",
    "check_output_paths",
    "compare",
    "control_kind",
    "control_median",
    "control_ratios",
    "control_tolerance",
    "decide",
    "format_table",
    "gate_documents",
    "gate_options",
    "marker_overrides",
    "min_rounds_p",
    "one_sided_mean_p",
    "one_sided_rounds_p",
    "parse_threshold",
    "round_times",
    "run_compare",
    "settings_from",
    "settings_from_args",
    "to_json",
    "to_markdown",
    "write_outputs",
]
