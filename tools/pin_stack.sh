#!/usr/bin/env bash
# Write the pinned stack (constraints/cpu.txt) from a clean venv: what `pip install TORCH` and then
# `pip install -e ".[dev,wandb]"` resolve to today. Usage (docs/upgrades.md, "The pinned stack"):
#   tools/pin_stack.sh                          # torch==2.13.0 -> constraints/cpu.txt
#   tools/pin_stack.sh torch==2.14.0            # a torch bump: review the diff, then A/B it
#   tools/pin_stack.sh torch==2.13.0 constraints/cuda.txt   # on the GPU runner (CUDA wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
torch_spec=${1:-torch==2.13.0}
out=${2:-constraints/cpu.txt}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q "$torch_spec"
"$tmp/venv/bin/python" -m pip install -q -e ".[dev,wandb]"
{
    echo "# The pinned stack: every package that \`pip install $torch_spec && pip install -e \".[dev,wandb]\"\`"
    echo "# installed into a clean Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())') venv (tools/pin_stack.sh). Install with \`-c $out\`"
    echo "# (.ci/run does); a bump is a diff of this file, judged with \`gpt2-bench ab --base-python\`"
    echo "# (docs/upgrades.md). No hashes: torch's CPU and CUDA builds are not all on PyPI (same page)."
    "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v '^pip=='
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
