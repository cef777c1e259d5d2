#!/usr/bin/env bash
# latest-main-artifact.sh NAME DIR: download artifact NAME of the newest successful run of
# gpu-benchmarks.yml on main that a push or a maintainer started, into DIR; write found=true or
# found=false to $GITHUB_OUTPUT. Needs GH_TOKEN with actions: read, and GITHUB_REPOSITORY.
set -euo pipefail
name="$1"
dir="$2"
mkdir -p "$dir"
# Only those runs upload the main artifacts (a fork's branch may also be called main, so the
# event and the head repository are checked as well).
run_ids=$(gh api \
  "repos/$GITHUB_REPOSITORY/actions/workflows/gpu-benchmarks.yml/runs?branch=main&status=success&per_page=20" \
  --jq '.workflow_runs[]
    | select(.event == "push" or .event == "workflow_dispatch")
    | select(.head_repository.full_name == env.GITHUB_REPOSITORY) | .id')
for run_id in $run_ids; do
  if gh run download "$run_id" --repo "$GITHUB_REPOSITORY" --name "$name" --dir "$dir"; then
    echo "$name: artifact of run $run_id"
    echo "found=true" >> "${GITHUB_OUTPUT:-/dev/null}"
    exit 0
  fi
done
echo "found=false" >> "${GITHUB_OUTPUT:-/dev/null}"
echo "::warning::No $name artifact found (no successful main run with it yet, or it expired)."
