#!/usr/bin/env bash
# install-venv.sh PROJECT [NAME]: a fresh venv $RUNNER_TEMP/NAME (default venv; $RUNNER_TEMP is
# emptied by the runner at each job's start and end) with every wheel checked against a hash:
# PROJECT/.github/requirements/gpu.txt (PROJECT's own lock), then PROJECT itself without
# dependencies, then, when FLASH_ATTN_WHEEL is set, that wheel against FLASH_ATTN_SHA256. No pip
# cache is read or written (a cache on a shared host can be poisoned). The default venv goes first
# on $GITHUB_PATH for the job's later steps; a named one (the stack job's base-venv and head-venv)
# is called by its path.
set -euo pipefail
project="$1"
name="${2:-venv}"
[[ "$name" =~ ^[a-z][a-z-]*$ ]] || { echo "::error::bad venv name: $name"; exit 1; }
venv="$RUNNER_TEMP/$name"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check)
"${pip[@]}" --require-hashes -r "$project/.github/requirements/gpu.txt"
"${pip[@]}" --no-deps --no-build-isolation -e "$project"
if [ -n "${FLASH_ATTN_WHEEL:-}" ]; then
  if ! [[ "${FLASH_ATTN_SHA256:-}" =~ ^[0-9a-f]{64}$ ]]; then
    echo "::error::FLASH_ATTN_WHEEL is set: FLASH_ATTN_SHA256 must be its SHA-256 (64 hex)."
    exit 1
  fi
  printf '%s --hash=sha256:%s\n' "$FLASH_ATTN_WHEEL" "$FLASH_ATTN_SHA256" > "$RUNNER_TEMP/flash.txt"
  "${pip[@]}" --no-deps --require-hashes -r "$RUNNER_TEMP/flash.txt"
fi
if [ "$name" = venv ]; then
  echo "$venv/bin" >> "${GITHUB_PATH:-/dev/null}"
fi
nvidia-smi
