#!/usr/bin/env bash
# GPU acceptance run: everything gpt2-bench does on CUDA, once, in at most 8 minutes on one GPU
# with the CUDA build of torch, then one table of invariants (tools/gpu_acceptance_check.py).
#
#   tools/gpu_acceptance.sh                                  # one GPU, gpt2 (124M)
#   tools/gpu_acceptance.sh --device cpu --gpt2-model tiny   # the dry run that CI runs
#
# Steps: gpt2-bench doctor; the grid (train, infer, generate, distill over every optimization the
# machine can run, B8xT512 on CUDA); a real CUDA out-of-memory case (B144xT1024, eager fp32)
# followed by a case that must still run; a 1-rank torchrun job (NCCL on CUDA, gloo on CPU). The
# twin control is the default, so every grid case times it. Files go to $OUT when it is set
# (else a new temporary folder, printed at the end). Exit 0 when every invariant holds.
set -uo pipefail

device=cuda
model=gpt2
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --gpt2-model) model="$2"; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu_acceptance.sh: unknown argument $1 (use --device, --gpt2-model)" >&2; exit 2 ;;
  esac
done
case "$device" in
  cuda | cuda:[0-9]* | cpu) ;;
  *) echo "gpu_acceptance.sh: --device $device: expected cuda, cuda:N or cpu" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.." || exit 2
out="${OUT:-$(mktemp -d -t gpt2-acceptance-XXXXXX)}"
mkdir -p "$out"
: > "$out/steps.tsv"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$device" = cpu ]; then
  # The dry run: the same steps at the smallest sizes; no time budget (CI machines vary).
  sizes=(--gpt2-batch-sizes 1 --gpt2-seq-lens 64 --gpt2-prompt-lens 16 --gpt2-new-tokens 8)
  rounds=(--gpt2-rounds 3 --gpt2-warmup 1 --gpt2-threads 1)
  budget=(900 900 0 300)
else
  # B8xT512 carries the SDPA-vs-eager invariant; 5 rounds keep compile and 8 optimizations in budget.
  sizes=(--gpt2-batch-sizes 8 --gpt2-seq-lens 512 --gpt2-prompt-lens 128 --gpt2-new-tokens 32)
  rounds=(--gpt2-rounds 5 --gpt2-warmup 2)
  budget=(90 270 60 60) # seconds: doctor, grid, oom, distributed (480 s = 8 minutes)
fi
common=(-p no:cacheprovider -q --gpt2-device "$device" --gpt2-model "$model")

# run_step NAME SECONDS COMMAND...: run it with a time limit, log to $out/NAME.log, record it
run_step() {
  local name="$1" limit="$2" start rc
  shift 2
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >> "$out/steps.tsv"
  printf '%-12s exit %-3s %4ss  (%s)\n' "$name" "$rc" "$(($(date +%s) - start))" "$out/$name.log"
}

run_step doctor "${budget[0]}" python -m gpt2_fixtures.cli doctor --device "$device" \
  --json "$out/doctor.json" --markdown "$out/doctor.md" --probe-rounds 4

run_step grid "${budget[1]}" python -m pytest benchmarks "${common[@]}" -m "not distributed" \
  "${sizes[@]}" "${rounds[@]}" --benchmark-json "$out/grid.json"

if [ "$device" != cpu ]; then
  # B144 x T1024 (the embedded corpus gives 147 such blocks), eager fp32: the attention scores
  # alone need about 7 GB per layer and copy, the fp32 logits and their gradient 60 GB, well
  # over 200 GB in all. The case must be recorded as out of memory and the b1 case after it must
  # still run in the same process.
  run_step oom "${budget[2]}" python -m pytest benchmarks/test_training.py "${common[@]}" \
    --gpt2-optimizations eager-fp32 --gpt2-batch-sizes 144,1 --gpt2-seq-lens 1024 \
    --gpt2-rounds 2 --gpt2-warmup 1 --benchmark-json "$out/oom.json"
fi

run_step distributed "${budget[3]}" python -m torch.distributed.run --standalone \
  --nproc-per-node=1 -m pytest benchmarks/test_distributed.py "${common[@]}" \
  --gpt2-strategies ddp --gpt2-world-sizes 1 --gpt2-optimizations sdpa-fp32 \
  "${sizes[@]}" "${rounds[@]}" --benchmark-json "$out/distributed.json"

echo
python tools/gpu_acceptance_check.py --device "$device" --dir "$out" \
  --title "gpt2-bench acceptance on $device ($model), $(date -u +%Y-%m-%d)"
status=$?
echo "files: $out"
exit "$status"
