#!/usr/bin/env bash
# The longest sequence trainable at context parallelism 1, 2 and 4 within a fixed budget of
# activation memory per process, on this machine's CPUs (mpirun, oversubscribed).
#
# What is measured: `tessera train` of a small Llama (dim 256, 4 layers, 8 query / 4 kv heads,
# ffn 768, vocabulary 4224 (the sample data's), tied embeddings: 1.6M parameters), fp32, one
# sequence per micro-batch and per step, 2 steps, on the sample data; every rank logs "peak live
# tensors allocated by the training steps" (the bytes of live tensors its forward and backward
# allocated at their peak, counted tensor by tensor; weights, gradients and AdamW moments exist
# before and are not in it). A sequence fits when that peak is at most BENCH_BUDGET_MIB on every
# rank. The weights and optimizer state are a few MiB here: the budget is the activations'.
#
# The search: the planner (`tessera validate`, the CP-aware estimate that planner.vs_measured
# checks) brackets the longest sequence first (doubling from 1024, then halving the step down to
# BENCH_STEP tokens; every length a multiple of BENCH_STEP, itself a multiple of 2 cp), then real
# runs confirm it: the candidate must fit and the next length (+ BENCH_STEP) must not; if a run
# disagrees with the planner the search steps by BENCH_STEP on measurements alone.
#   scripts/bench/cp_longest_sequence.sh
# Env: BENCH_BUDGET_MIB (512), BENCH_CPS ("1 2 4"), BENCH_STEP (256), BENCH_DIR (build/cp_bench).
# The last lines are the table: cp, longest seq, measured peak per rank (the largest over ranks),
# the planner's prediction, measured / predicted, and the next length's measured peak.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BUDGET="${BENCH_BUDGET_MIB:-512}"
CPS="${BENCH_CPS:-1 2 4}"
STEP="${BENCH_STEP:-256}"
DIR="${BENCH_DIR:-$ROOT/build/cp_bench}"
[[ -x build/tessera ]] || scripts/build.sh
scripts/make_sample_corpus.sh >/dev/null
scripts/prepare_sample_data.sh >/dev/null
DATA="${TESSERA_SAMPLE_DATA:-$ROOT/.cache/sample_data}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
mkdir -p "$DIR"

# The --set flags of one run: the model, cp, seq.
flags() {
  local cp=$1 seq=$2
  for o in model.dim=256 model.n_layers=4 model.n_heads=8 model.n_kv_heads=4 model.ffn_dim=768 \
    model.vocab_size=4224 model.tie_embeddings=true train.precision=fp32 train.steps=2 train.eval_every=0 \
    train.peak_tflops=1 train.threads=1 train.micro_batch=1 train.global_batch=1 checkpoint.at_end=false \
    "data.train=$DATA/text" "data.val=[]" "parallel.cp=$cp" "train.seq_len=$seq"; do
    printf -- '--set %s ' "$o"
  done
}

# The planner's activation bytes per rank (stage 0; one stage here).
predicted() {
  # shellcheck disable=SC2046
  build/tessera validate --world "$1" $(flags "$1" "$2") |
    sed -n 's/.*activation bytes per rank, stage 0: [0-9]* (with a fused attention kernel: \([0-9]*\)).*/\1/p'
}

fits_predicted() { [[ $(predicted "$1" "$2") -le $((BUDGET * 1024 * 1024)) ]]; }

# The largest "peak live tensors" over the ranks of a real run, in MiB.
measured() {
  local cp=$1 seq=$2 run="$DIR/cp$1_seq$2"
  rm -rf "$run"
  local cmd=(build/tessera train)
  [[ $cp -gt 1 ]] && cmd=(mpirun -np "$cp" --oversubscribe --bind-to none build/tessera train)
  # shellcheck disable=SC2046
  if ! "${cmd[@]}" $(flags "$cp" "$seq") --set "train.run_dir=$run" >"$run.out" 2>&1; then
    echo "training failed at cp $cp seq $seq: $run.out" >&2
    exit 1
  fi
  sed -n 's/.*peak live tensors allocated by the training steps on this rank: \([0-9.]*\) MiB.*/\1/p' \
    "$run"/logs/rank-*.log | sort -g | tail -1
}

fits_measured() { awk -v m="$1" -v b="$BUDGET" 'BEGIN { exit !(m <= b) }'; }

# The planner's longest fitting multiple of STEP.
planned_longest() {
  local cp=$1 lo=0 hi=1024
  while fits_predicted "$cp" "$hi"; do lo=$hi hi=$((hi * 2)); done
  while [[ $((hi - lo)) -gt $STEP ]]; do
    local mid=$(((lo + hi) / 2 / STEP * STEP))
    if fits_predicted "$cp" "$mid"; then lo=$mid; else hi=$mid; fi
  done
  echo "$lo"
}

rows=()
for cp in $CPS; do
  seq=$(planned_longest "$cp")
  echo "cp $cp: the planner's longest sequence within $BUDGET MiB: $seq"
  m=$(measured "$cp" "$seq")
  echo "  measured at $seq: $m MiB"
  while ! fits_measured "$m" && [[ $seq -gt $STEP ]]; do
    seq=$((seq - STEP)) m=$(measured "$cp" "$seq")
    echo "  measured at $seq: $m MiB"
  done
  next=$((seq + STEP)) n=$(measured "$cp" "$next")
  echo "  measured at $next: $n MiB"
  while fits_measured "$n"; do
    seq=$next m=$n next=$((seq + STEP)) n=$(measured "$cp" "$next")
    echo "  measured at $next: $n MiB"
  done
  p=$(predicted "$cp" "$seq")
  rows+=("$(awk -v cp="$cp" -v s="$seq" -v m="$m" -v p="$p" -v nx="$next" -v n="$n" 'BEGIN {
    printf "%3d  %12d  %22.1f  %17.1f  %8.3f  %16s\n", cp, s, m, p / 1048576, m * 1048576 / p, nx ": " n }')")
done
echo
echo "budget: $BUDGET MiB of live tensors per rank (activations); model dim 256, 4 layers, 8/4 heads, ffn 768,"
echo "vocab 4224, fp32, micro-batch 1, 2 steps"
printf "%3s  %12s  %22s  %17s  %8s  %16s\n" cp "longest seq" "measured peak MiB/rank" "predicted MiB" ratio "next seq: MiB"
for r in "${rows[@]}"; do echo "$r"; done
