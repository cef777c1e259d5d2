#!/usr/bin/env bash
# sticky-comment.sh PR_NUMBER COMMENT_FILE: create, or edit in place, the one gpt2-bench comment
# on the pull request. PR_NUMBER is checked as data all the same: digits only, and that pull
# request's head must still be HEAD_SHA (the commit the triggering run benchmarked); a pull request
# that moved since gets no comment about an older head. Needs GH_TOKEN (pull-requests: write),
# GITHUB_REPOSITORY and HEAD_SHA.
set -euo pipefail
number="${1:-}"
body="$2"
marker='<!-- gpt2-bench-gate -->'
if ! [[ "$number" =~ ^[0-9]{1,9}$ ]]; then
  echo "::error::not a pull-request number; nothing posted."
  exit 1
fi
head=$(gh api "repos/$GITHUB_REPOSITORY/pulls/$number" --jq '.head.sha')
if [ "$head" != "$HEAD_SHA" ]; then
  echo "::warning::Pull request #$number is at $head, not the benchmarked $HEAD_SHA; not posted."
  exit 0
fi
if [ "$(head -n 1 "$body")" != "$marker" ]; then
  echo "::error::The rendered comment does not start with the gpt2-bench marker; not posted."
  exit 1
fi
# Our own earlier comment: written by this workflow's bot and starting with the marker.
existing=$(gh api --paginate "repos/$GITHUB_REPOSITORY/issues/$number/comments" \
  --jq ".[] | select(.user.login == \"github-actions[bot]\")
        | select(.body | startswith(\"$marker\")) | .id" | tail -n 1)
if [ -n "$existing" ]; then
  gh api --method PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$existing" \
    -F "body=@$body" --silent
  echo "Updated comment $existing on #$number."
else
  gh api --method POST "repos/$GITHUB_REPOSITORY/issues/$number/comments" \
    -F "body=@$body" --silent
  echo "Commented on #$number."
fi
