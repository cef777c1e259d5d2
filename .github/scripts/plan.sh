#!/usr/bin/env bash
# plan.sh: decide what a gpu-benchmarks run benchmarks, before any self-hosted job starts.
# Env: EVENT (github.event_name), PR and PR_SHA (workflow_dispatch inputs; empty for a run of
# main), GITHUB_SHA, GITHUB_REF, DEFAULT_BRANCH, GPU_IMAGE (repository variable), and GH_TOKEN
# with pull-requests: read. Writes mode, pr, head_sha and base_sha to $GITHUB_OUTPUT; exits 1,
# with an ::error:: saying why, when the request must not run.
set -euo pipefail
out="${GITHUB_OUTPUT:-/dev/null}"
refuse() {
  echo "::error title=gpu-benchmarks refused::$1"
  exit 1
}

# The GPU jobs run in this container image: a tag can be moved, a digest cannot.
if ! [[ "${GPU_IMAGE:-}" =~ ^[a-z0-9][a-z0-9./_:-]*@sha256:[0-9a-f]{64}$ ]]; then
  refuse "the repository variable GPU_IMAGE must name an image by digest (NAME@sha256:<64 hex>)."
fi

if [ -z "${PR:-}" ] && [ -z "${PR_SHA:-}" ]; then
  mode=main
  [ "$GITHUB_REF" = "refs/heads/$DEFAULT_BRANCH" ] || mode=branch
  printf 'mode=%s\npr=\nhead_sha=%s\nbase_sha=%s\n' "$mode" "$GITHUB_SHA" "$GITHUB_SHA" >> "$out"
  echo "Benchmarking $GITHUB_REF at $GITHUB_SHA ($mode)."
  exit 0
fi

# A pull request: only from the default branch's copy of this workflow, and only the exact
# commit a maintainer reviewed.
[ "$EVENT" = workflow_dispatch ] || refuse "pull requests are benchmarked by workflow_dispatch only."
[ "$GITHUB_REF" = "refs/heads/$DEFAULT_BRANCH" ] ||
  refuse "run it on $DEFAULT_BRANCH: its workflow file is the reviewed one."
[[ "${PR:-}" =~ ^[1-9][0-9]{0,8}$ ]] || refuse "input pr must be a pull-request number."
[[ "${PR_SHA:-}" =~ ^[0-9a-f]{40}$ ]] || refuse "input sha must be the full 40-hex head commit."
read -r state head base < <(gh api "repos/$GITHUB_REPOSITORY/pulls/$PR" \
  --jq '"\(.state) \(.head.sha) \(.base.sha)"')
[ "$state" = open ] || refuse "pull request #$PR is $state."
[ "$head" = "$PR_SHA" ] ||
  refuse "pull request #$PR moved to $head since $PR_SHA was reviewed: review it, run again."
printf 'mode=pr\npr=%s\nhead_sha=%s\nbase_sha=%s\n' "$PR" "$head" "$base" >> "$out"
echo "Benchmarking pull request #$PR at $head (base $base)."
