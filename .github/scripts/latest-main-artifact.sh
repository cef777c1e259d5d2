#!/usr/bin/env bash
# latest-main-artifact.sh DIR NAME...: download into DIR the first artifact NAME (in the order
# given) of a successful main run of gpu-benchmarks.yml, preferring the run of commit PREFER_SHA
# (the pull request's base) and else the newest; write found, name, run_id, head_sha and
# created_at to $GITHUB_OUTPUT. Needs GH_TOKEN with actions: read, and GITHUB_REPOSITORY.
#
# Main runs are push runs, and workflow_dispatch runs that benchmarked no pull request (those are
# titled "PR #N at SHA" by the workflow's run-name, from the maintainer's inputs). Runs of fork
# branches named main are left out by their head repository. Pages of 100 runs are read until a
# run has the artifact (MAX_PAGES at most), so a page full of other runs cannot hide it.
set -euo pipefail
dir="$1"
shift
mkdir -p "$dir"
max_pages="${MAX_PAGES:-10}"
prefer="${PREFER_SHA:-}"
out="${GITHUB_OUTPUT:-/dev/null}"

main_runs() { # PAGE JSON on stdin: "id head_sha created_at" of its main runs, newest first
  jq -r --arg repo "$GITHUB_REPOSITORY" '.workflow_runs[]
    | select(.head_repository.full_name == $repo)
    | select(.event == "push" or (.event == "workflow_dispatch"
        and (.display_title | test("^PR #[0-9]+ at [0-9a-f]{40}$") | not)))
    | "\(.id) \(.head_sha) \(.created_at)"'
}

candidates=$(for page in $(seq 1 "$max_pages"); do
  json=$(gh api "repos/$GITHUB_REPOSITORY/actions/workflows/gpu-benchmarks.yml/runs?branch=main&status=success&per_page=100&page=$page")
  # The last page is the first empty one (a page of only other runs is not the end).
  [ "$(jq '.workflow_runs | length' <<< "$json")" -gt 0 ] || break
  main_runs <<< "$json"
done)
# The base's own run first (item 9 of issue 27: compare with the commit the pull request is on).
ordered=$(printf '%s\n' "$candidates" | awk -v sha="$prefer" 'sha != "" && $2 == sha' &&
  printf '%s\n' "$candidates" | awk -v sha="$prefer" 'NF && !(sha != "" && $2 == sha)')

for name in "$@"; do
  while read -r run_id head_sha created_at; do
    [ -n "$run_id" ] || continue
    if gh run download "$run_id" --repo "$GITHUB_REPOSITORY" --name "$name" --dir "$dir"; then
      echo "$name: artifact of run $run_id (main commit $head_sha, $created_at)"
      {
        echo "found=true"
        echo "name=$name"
        echo "run_id=$run_id"
        echo "head_sha=$head_sha"
        echo "created_at=$created_at"
      } >> "$out"
      exit 0
    fi
  done <<< "$ordered"
done
echo "found=false" >> "$out"
echo "::warning::No artifact named $* in the main runs read (none yet, or expired)."
