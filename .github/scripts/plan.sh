#!/usr/bin/env bash
# plan.sh: decide what a gpu-benchmarks run benchmarks, before any self-hosted job starts.
# Env: EVENT (github.event_name), PR and PR_SHA (workflow_dispatch inputs; empty for a run of
# main), GITHUB_SHA, GITHUB_REF, DEFAULT_BRANCH, GPU_IMAGE (repository variable), and GH_TOKEN
# with pull-requests: read. Writes mode, pr, head_sha, base_sha, stack (changed or same) and
# stack_pins (which pins changed, one line) to $GITHUB_OUTPUT; exits 1, with an ::error:: saying
# why, when the request must not run.
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
  printf 'stack=same\nstack_pins=\n' >> "$out"
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

# Does it change the stack (docs/ci.md, "A pull request that bumps the stack")? The stack files
# that the compare of base...head lists are downloaded at both commits, as data, and compared by
# stack-diff.py. GitHub's compare lists at most 300 files: a longer list counts as a stack change.
# A failed call fails the plan (set -e): a stack change must not pass unseen. Each path once
# (pages after the first list the commits; should one repeat the files, they count once).
files=$(gh api --paginate "repos/$GITHUB_REPOSITORY/compare/$base...$head?per_page=100" \
  --jq '.files[]? | "\(.filename)\n\(.previous_filename // "")"' | sort -u)
count=0
stack_paths=()
while IFS= read -r path; do
  [ -n "$path" ] || continue
  count=$((count + 1))
  if [[ "$path" =~ ^(pyproject\.toml|\.github/requirements/gpu\.(txt|in)|constraints/[A-Za-z0-9._-]+)$ ]]; then
    stack_paths+=("$path")
  fi
done <<< "$files"
if [ "$count" -ge 300 ]; then
  printf 'stack=changed\nstack_pins=%s\n' \
    "the compare lists $count paths (GitHub lists 300 files at most): treated as a stack change" \
    >> "$out"
  echo "Stack: treated as changed ($count paths listed)."
  exit 0
fi
dir=$(mktemp -d "${RUNNER_TEMP:-/tmp}/stack.XXXXXX")
for side in base head; do
  sha=$base
  [ "$side" = base ] || sha=$head
  for path in "${stack_paths[@]}"; do
    mkdir -p "$dir/$side/$(dirname "$path")"
    # A file absent on one side (added, removed, renamed) stays absent: stack-diff.py says so.
    gh api -H "Accept: application/vnd.github.raw+json" "repos/$GITHUB_REPOSITORY/contents/$path?ref=$sha" \
      > "$dir/$side/$path" 2> /dev/null || rm -f "$dir/$side/$path"
  done
done
python3 "$(dirname "$0")/stack-diff.py" "$dir/base" "$dir/head" "${stack_paths[@]}" | tee -a "$out"
