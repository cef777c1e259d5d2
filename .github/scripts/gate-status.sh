#!/usr/bin/env bash
# gate-status.sh STATUS: turn the gate's exit status into the check's outcome and an annotation.
# 0 pass; 3 not fully judged: a warning, the check passes; 1 regression and anything else
# (2: unusable input) fail the check. tests/test_workflows.py runs this for each status.
set -euo pipefail
case "${1:-}" in
  0)
    echo "gpt2-bench gate: pass"
    ;;
  3)
    echo "::warning title=gpt2-bench gate::Not fully judged: some benchmarks could not be" \
      "judged (missing, too few rounds, or machine speed moved); see the job summary."
    ;;
  1)
    echo "::error title=gpt2-bench gate::Performance regression against the main baseline" \
      "(see the job summary)."
    exit 1
    ;;
  *)
    echo "::error title=gpt2-bench gate::The gate could not read its input (exit ${1:-none})."
    exit 1
    ;;
esac
