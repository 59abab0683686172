#!/usr/bin/env bash
# Side-by-side training throughput: Tessera (build/tessera) vs Hugging Face transformers'
# LlamaForCausalLM (scripts/bench/hf_reference.py), on this machine's CPUs, in one script run.
#
# What is measured: for each case both programs train the same Llama-3-style model shape from
# random init on the same uint16 token file (same sequential sampling contract), with the same
# recipe (AdamW, warmup+cosine LR, global-norm grad clipping, gradient accumulation), the same
# number of optimizer steps and the same thread count (nproc). Each program reports the wall time
# of every optimizer step (Tessera: step_time_s in RUN_DIR/metrics.jsonl; HF: time.perf_counter per
# step). The first K steps are dropped and both figures are computed identically:
#     tokens/s = global_batch * seq_len * timed_steps / sum(step_time_s of the timed steps)
# ratio = tessera / hf (> 1 means Tessera is faster). bf16 = bf16 compute under autocast with fp32
# master weights, fp32 optimizer state and an fp32 loss, on both sides.
#
# Data: the byte-level tokenization of the sample corpus (.cache/sample_corpus/train/*.txt in sorted
# order; token id = byte value, id 256 = end of document after each document), written as raw
# little-endian uint16 to build/bench/tokens.u16.
#
# Cases (shapes in case_config below): tiny-fp32, tiny-bf16, 100m-fp32, 100m-bf16.
# Default: BENCH_CASES="tiny-fp32 100m-fp32 tiny-bf16". 100m-bf16 is opt-in: on a CPU without
# AVX512-BF16/AMX (e.g. this AVX2 box) PyTorch's bf16 GEMMs run 10-50x slower than fp32, so one
# 100M bf16 optimizer step took ~8 min here (HF), i.e. ~16 min per program for its 2 steps.
# After the table, the LAST line printed is the like-for-like headline, both sides in fp32, on the
# largest fp32 case run (100m-fp32, else tiny-fp32):
#     case=100m-fp32 precision=fp32-both tessera_tokens_per_s=A reference_tokens_per_s=B ratio=R
# The peer's AdamW runs fused (its fastest CPU path, scripts/bench/hf_reference.py).
#
# Environment knobs:
#   BENCH_CASES     space-separated subset/order of the cases above
#   BENCH_THREADS   threads for both programs (default: nproc)
#   BENCH_DIR       output folder (default: build/bench); logs and run dirs go there
#   BENCH_SKIP_BUILD=1  use the existing build/tessera, do not run scripts/build.sh
#   BENCH_CORPUS_DIR    folder of *.txt documents to tokenize instead of the sample corpus
#   BENCH_HF_ONLY=1 diagnostic: skip building/running Tessera (no ratio; last line says so)
#   BENCH_REPEATS   rounds per case (default 1): each round runs Tessera then the peer, and each
#                   side's figure is its median over the rounds, so a slow spell of a shared
#                   machine falls on both sides rather than on whichever program it hit
# Timings are only meaningful on an otherwise idle machine: the script warns when it is not.
# Run from anywhere: bash scripts/bench/vs_hf.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BENCH_DIR="${BENCH_DIR:-$ROOT/build/bench}"
THREADS="${BENCH_THREADS:-$(nproc)}"
CASES="${BENCH_CASES:-tiny-fp32 100m-fp32 tiny-bf16}"
HF_ONLY="${BENCH_HF_ONLY:-0}"
REPEATS="${BENCH_REPEATS:-1}"
[[ $REPEATS =~ ^[1-9][0-9]*$ ]] || { echo "[vs_hf] ERROR: BENCH_REPEATS='$REPEATS': expected a positive integer" >&2; exit 1; }
SKIP_BUILD="${BENCH_SKIP_BUILD:-0}"
TORCH_VERSION="${TESSERA_TORCH_VERSION:-2.13.0}"
TRANSFORMERS_SPEC="${BENCH_TRANSFORMERS_SPEC:-transformers==5.24.0}"
PY="$ROOT/.venv/bin/python"
TESSERA="$ROOT/build/tessera"
TESSERA_CONFIG="$ROOT/configs/tiny.yaml"
CORPUS_DIR="${BENCH_CORPUS_DIR:-$ROOT/.cache/sample_corpus/train}"
TOKENS="$BENCH_DIR/tokens.u16"
T_START=$SECONDS

log() { printf '[vs_hf %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }
die() { printf '[vs_hf] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- shared recipe (both programs) -----------------------------------------------------------
LR=3e-4 MIN_LR=3e-5 WEIGHT_DECAY=0.1 GRAD_CLIP=1.0 ROPE_THETA=500000 NORM_EPS=1e-5 SEED=1234
LR_WARMUP=2   # LR warmup steps (not the timing exclusion)

# case_config NAME -> sets DIM N_LAYERS N_HEADS N_KV_HEADS FFN_DIM VOCAB TIE SEQ_LEN MICRO GLOBAL
#                     STEPS EXCLUDED PRECISION
case_config() {
  local size="${1%-*}"
  PRECISION="${1##*-}"
  case "$PRECISION" in fp32|bf16) ;; *) die "unknown case '$1' (precision must be fp32 or bf16)";; esac
  VOCAB=512   # 256 byte ids + end-of-document (256) + specials, padded to 512
  TIE=1
  case "$size" in
    tiny)
      DIM=256 N_LAYERS=4 N_HEADS=8 N_KV_HEADS=4 FFN_DIM=768
      SEQ_LEN=256 MICRO=8 GLOBAL=16
      # bf16 steps are ~40x slower than fp32 on AVX2 (see header): fewer steps keep the run short.
      if [[ $PRECISION == fp32 ]]; then STEPS=20 EXCLUDED=3; else STEPS=7 EXCLUDED=3; fi ;;
    100m)
      # 14 x 7,177,728 per layer + 512x768 tied embedding + final norm = 100,882,176 parameters.
      DIM=768 N_LAYERS=14 N_HEADS=12 N_KV_HEADS=4 FFN_DIM=2432
      SEQ_LEN=512 MICRO=2 GLOBAL=4
      if [[ $PRECISION == fp32 ]]; then STEPS=6 EXCLUDED=2; else STEPS=2 EXCLUDED=1; fi ;;
    *) die "unknown case '$1' (known: tiny-fp32 tiny-bf16 100m-fp32 100m-bf16)";;
  esac
}

# ---- 1. environment ----------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  log "no .venv: running scripts/setup.sh"
  bash "$ROOT/scripts/setup.sh"
fi
torch_version() { "$PY" -c "import torch; print(torch.__version__.split('+')[0])"; }
[[ "$(torch_version)" == "$TORCH_VERSION" ]] || die ".venv torch is $(torch_version), expected $TORCH_VERSION (run scripts/setup.sh)"
if ! "$PY" -c "import transformers" 2>/dev/null; then
  log "installing $TRANSFORMERS_SPEC into .venv (torch pinned to the installed version)"
  pin="$(mktemp)"; trap 'rm -f "$pin"' EXIT
  "$PY" -c "import torch; print('torch==' + torch.__version__)" >"$pin"
  "$PY" -m pip install -q -c "$pin" "$TRANSFORMERS_SPEC"
  rm -f "$pin"; trap - EXIT
fi
[[ "$(torch_version)" == "$TORCH_VERSION" ]] || die "installing transformers changed torch to $(torch_version); expected $TORCH_VERSION"
log "python: $("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')"

# ---- 2. Tessera build --------------------------------------------------------------------------
if [[ $HF_ONLY == 1 ]]; then
  log "BENCH_HF_ONLY=1: not building or running Tessera"
else
  if [[ $SKIP_BUILD == 1 ]]; then
    log "BENCH_SKIP_BUILD=1: using the existing build/tessera"
  else
    [[ -f "$ROOT/scripts/build.sh" ]] || die "scripts/build.sh not found: cannot build Tessera"
    log "building Tessera (scripts/build.sh)"
    bash "$ROOT/scripts/build.sh" || die "scripts/build.sh failed"
  fi
  [[ -x "$TESSERA" ]] || die "build/tessera is missing after scripts/build.sh: the Tessera C++ binary has not been built (is the trainer CLI written yet?)"
  [[ -f "$TESSERA_CONFIG" ]] || die "configs/tiny.yaml is missing: Tessera needs a base config"
fi

# ---- 3. corpus and token file ------------------------------------------------------------------
if [[ -z "${BENCH_CORPUS_DIR:-}" ]]; then
  # Idempotent: it reuses .cache/sample_corpus when its COMPLETE marker is there.
  [[ -f "$ROOT/scripts/make_sample_corpus.sh" ]] || die "scripts/make_sample_corpus.sh not found: cannot make the sample corpus"
  log "sample corpus (scripts/make_sample_corpus.sh)"
  bash "$ROOT/scripts/make_sample_corpus.sh" || die "scripts/make_sample_corpus.sh failed"
fi
compgen -G "$CORPUS_DIR/*.txt" >/dev/null || die "no documents: $CORPUS_DIR/*.txt matches nothing"
mkdir -p "$BENCH_DIR"
log "tokenizing $CORPUS_DIR (byte-level, id 256 after each document) -> ${TOKENS#$ROOT/}"
"$PY" - "$CORPUS_DIR" "$TOKENS" <<'EOF'
import numpy as np, os, sys
src, dst = sys.argv[1], sys.argv[2]
names = sorted(n for n in os.listdir(src) if n.endswith(".txt"))
parts, eod = [], np.array([256], dtype="<u2")
for n in names:
    with open(os.path.join(src, n), "rb") as f:
        parts.append(np.frombuffer(f.read(), dtype=np.uint8).astype("<u2"))
    parts.append(eod)
tokens = np.concatenate(parts)
tokens.tofile(dst + ".tmp")
os.replace(dst + ".tmp", dst)
print(f"[vs_hf] token file: {len(names)} documents, {len(tokens):,} tokens")
EOF
"$PY" "$ROOT/scripts/bench/u16_to_megatron.py" "$TOKENS" "${TOKENS%.u16}" || die "cannot wrap the token file"

# ---- 4. runs -----------------------------------------------------------------------------------
export OMP_NUM_THREADS="$THREADS"
read -r load1 _ </proc/loadavg
log "threads=$THREADS, load average $load1 before the runs"
if "$PY" -c "import sys; sys.exit(0 if float('$load1') > 0.5 else 1)"; then
  log "WARNING: the machine is busy (load $load1): other processes share these $(nproc) cores and will skew both programs' timings"
fi

declare -A R_TESS R_HF R_PARAMS R_TIMED R_LOSS_T R_LOSS_H

# tessera_figure RUN_DIR STEPS EXCLUDED TOKENS_PER_STEP -> "tokens_per_s final_loss"
tessera_figure() {
  "$PY" - "$@" <<'EOF'
import json, sys
run_dir, steps, excluded, tok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = []
with open(f"{run_dir}/metrics.jsonl") as f:
    for line in f:
        line = line.strip()
        if line:
            r = json.loads(line)
            if "step" in r and "step_time_s" in r:
                rows.append(r)
rows.sort(key=lambda r: r["step"])
if len(rows) != steps:
    sys.exit(f"[vs_hf] ERROR: {run_dir}/metrics.jsonl has {len(rows)} step records, expected {steps} (train.log_every=1)")
timed = [float(r["step_time_s"]) for r in rows[excluded:]]
print(f"{tok * len(timed) / sum(timed):.3f} {float(rows[-1]['loss']):.4f}")
EOF
}

# run_round CASE ROUND: one run of each program; sets R_TESS, R_HF, ... for the round.
run_round() {
  local name="$1" round="$2"
  case_config "$name"
  local run="$BENCH_DIR/$name" tok_step=$((GLOBAL * SEQ_LEN))
  ((REPEATS == 1)) || run="$BENCH_DIR/$name/round$round"
  rm -rf "$run"; mkdir -p "$run"
  log "=== $name (round $round of $REPEATS): dim=$DIM layers=$N_LAYERS heads=$N_HEADS/$N_KV_HEADS ffn=$FFN_DIM vocab=$VOCAB seq=$SEQ_LEN micro=$MICRO global=$GLOBAL steps=$STEPS (first $EXCLUDED not timed) precision=$PRECISION threads=$THREADS"

  if [[ $HF_ONLY != 1 ]]; then
    local tie_bool=false; [[ $TIE == 1 ]] && tie_bool=true
    log "$name: Tessera ..."
    "$TESSERA" train "$TESSERA_CONFIG" \
      --set model.dim=$DIM --set model.n_layers=$N_LAYERS --set model.n_heads=$N_HEADS \
      --set model.n_kv_heads=$N_KV_HEADS --set model.ffn_dim=$FFN_DIM --set model.vocab_size=$VOCAB \
      --set model.rope_theta=$ROPE_THETA --set model.norm_eps=$NORM_EPS --set model.tie_embeddings=$tie_bool \
      --set train.seq_len=$SEQ_LEN --set train.micro_batch=$MICRO --set train.global_batch=$GLOBAL \
      --set train.steps=$STEPS --set train.warmup_steps=$LR_WARMUP --set train.lr=$LR \
      --set train.min_lr=$MIN_LR --set train.weight_decay=$WEIGHT_DECAY --set train.grad_clip=$GRAD_CLIP \
      --set train.precision=$PRECISION --set train.threads=$THREADS --set train.seed=$SEED \
      --set train.log_every=1 --set train.eval_every=0 --set train.run_dir="$run/tessera" \
      --set data.train="${TOKENS%.u16}" --set data.val=[] --set data.shuffle=false --set train.sample_every=0 \
      2>&1 | tee "$run/tessera.log" | sed -u 's/^/    [tessera] /' \
      || die "$name: Tessera failed (log: $run/tessera.log)"
    [[ -f "$run/tessera/metrics.jsonl" ]] || die "$name: Tessera wrote no $run/tessera/metrics.jsonl"
    local fig; fig="$(tessera_figure "$run/tessera" "$STEPS" "$EXCLUDED" "$tok_step")"
    R_TESS[$name]="${fig% *}"; R_LOSS_T[$name]="${fig#* }"
    log "$name: Tessera ${R_TESS[$name]} tokens/s"
  fi

  log "$name: HF transformers ..."
  "$PY" "$ROOT/scripts/bench/hf_reference.py" \
    --dim $DIM --n-layers $N_LAYERS --n-heads $N_HEADS --n-kv-heads $N_KV_HEADS --ffn-dim $FFN_DIM \
    --vocab-size $VOCAB --seq-len $SEQ_LEN --micro-batch $MICRO --global-batch $GLOBAL \
    --steps $STEPS --warmup-steps $LR_WARMUP --lr $LR --min-lr $MIN_LR --weight-decay $WEIGHT_DECAY \
    --grad-clip $GRAD_CLIP --rope-theta $ROPE_THETA --norm-eps $NORM_EPS --tie-embeddings $TIE \
    --precision $PRECISION --threads $THREADS --data "$TOKENS" --seed $SEED \
    --warmup-steps-excluded $EXCLUDED \
    2>&1 | tee "$run/hf.log" | sed -u 's/^/    [hf] /' \
    || die "$name: hf_reference.py failed (log: $run/hf.log)"
  local json; json="$(grep '^{"impl": *"hf"' "$run/hf.log" | tail -n 1)" || die "$name: hf_reference.py printed no result line"
  read -r R_HF[$name] R_PARAMS[$name] R_TIMED[$name] R_LOSS_H[$name] < <("$PY" -c '
import json, sys; r = json.loads(sys.argv[1])
print("%.3f %d %d %.4f" % (r["tokens_per_s"], r["params"], r["timed_steps"], r["final_loss"]))' "$json")
  log "$name: HF ${R_HF[$name]} tokens/s, ${R_PARAMS[$name]} parameters"
}

median() { "$PY" -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }

# run_case CASE: REPEATS rounds; each side's figure is its median over them.
run_case() {
  local name="$1" round tess=() hf=()
  for ((round = 1; round <= REPEATS; round++)); do
    run_round "$name" "$round"
    [[ -n "${R_TESS[$name]:-}" ]] && tess+=("${R_TESS[$name]}")
    hf+=("${R_HF[$name]}")
  done
  if ((REPEATS > 1)); then
    log "$name: rounds: Tessera ${tess[*]:-skipped}; HF ${hf[*]} (tokens/s); medians taken"
    ((${#tess[@]} == 0)) || R_TESS[$name]="$(median "${tess[@]}")"
    R_HF[$name]="$(median "${hf[@]}")"
  fi
}

for c in $CASES; do run_case "$c"; done

# ---- 5. report ---------------------------------------------------------------------------------
ratio() { "$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
echo
log "results (threads=$THREADS; tokens/s over the timed steps; ratio = tessera/hf)"
printf '%-10s %13s %6s %15s %15s %8s %12s %12s\n' case params timed tessera_tok/s hf_tok/s ratio tessera_loss hf_loss
for c in $CASES; do
  t="${R_TESS[$c]:--}"; r="-"
  [[ $t != - ]] && r="$(ratio "$t" "${R_HF[$c]}")"
  printf '%-10s %13s %6s %15s %15s %8s %12s %12s\n' "$c" "${R_PARAMS[$c]}" \
    "${R_TIMED[$c]}" "$t" "${R_HF[$c]}" "$r" "${R_LOSS_T[$c]:--}" "${R_LOSS_H[$c]}"
done
"$PY" - "$BENCH_DIR/results.json" "$THREADS" "$CASES" \
  "$(for c in $CASES; do echo "$c ${R_PARAMS[$c]} ${R_TIMED[$c]} ${R_TESS[$c]:-null} ${R_HF[$c]}"; done)" <<'EOF'
import json, sys
path, threads, rows = sys.argv[1], int(sys.argv[2]), sys.argv[4].splitlines()
out = {"threads": threads, "cases": {}}
for row in rows:
    c, p, timed, t, h = row.split()
    out["cases"][c] = {"params": int(p), "timed_steps": int(timed),
                       "tessera_tokens_per_s": None if t == "null" else float(t),
                       "hf_tokens_per_s": float(h)}
with open(path, "w") as f:
    json.dump(out, f, indent=1)
EOF
log "wrote ${BENCH_DIR#$ROOT/}/results.json; total time $((SECONDS - T_START)) s"

# The headline compares like with like: both sides in fp32 (LibTorch's fp32 GEMM on both), on the
# largest fp32 case that ran. bf16 on a CPU is not a headline: where the CPU lacks bf16 units
# the peer's autocast falls onto LibTorch's slow bf16 GEMM (see docs/perf.md).
headline=""
for c in 100m-fp32 tiny-fp32; do
  if [[ -n "${R_HF[$c]:-}" ]]; then headline="$c"; break; fi
done
if [[ -z $headline ]]; then
  echo "no fp32 case was run (BENCH_CASES=\"$CASES\"): no summary line"
elif [[ $HF_ONLY == 1 ]]; then
  printf 'case=%s precision=fp32-both tessera_tokens_per_s=skipped reference_tokens_per_s=%.1f ratio=skipped\n' \
    "$headline" "${R_HF[$headline]}"
else
  printf 'case=%s precision=fp32-both tessera_tokens_per_s=%.1f reference_tokens_per_s=%.1f ratio=%s\n' \
    "$headline" "${R_TESS[$headline]}" "${R_HF[$headline]}" "$(ratio "${R_TESS[$headline]}" "${R_HF[$headline]}")"
fi
