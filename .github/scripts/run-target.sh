#!/usr/bin/env bash
# run-target.sh TITLE: the pull request and head a gpu-benchmarks run benchmarked, from its title
# "PR #N at SHA" (gpu-benchmarks.yml's run-name, from a maintainer's workflow_dispatch inputs).
# Writes pr and head_sha to $GITHUB_OUTPUT, or nothing for a run of main (no pull request).
set -euo pipefail
if [[ "${1:-}" =~ ^PR\ \#([1-9][0-9]{0,8})\ at\ ([0-9a-f]{40})$ ]]; then
  printf 'pr=%s\nhead_sha=%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" >> "${GITHUB_OUTPUT:-/dev/null}"
  echo "Pull request #${BASH_REMATCH[1]} at ${BASH_REMATCH[2]}."
else
  echo "Not a pull request's run (title not 'PR #N at SHA'): nothing to post."
fi
