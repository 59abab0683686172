#!/usr/bin/env bash
# Activation memory and speed side by side: Tessera's model.recompute none / selective / full
# against Hugging Face transformers' LlamaForCausalLM by default and with
# gradient_checkpointing_enable(), on this machine's CPUs, in one script run.
#
# What is measured: for each sequence length, each program trains the same ~100M Llama-style
# model (the 100m shape of scripts/bench/vs_hf.sh: dim 768, 14 layers, 12/4 heads, ffn 2432,
# byte-level vocabulary of 512, tied embeddings) from random init on the same token file, fp32,
# one sequence per micro-batch and per step, for STEPS optimizer steps with the same recipe. Each
# run reports
#   peak MiB   the process's peak resident set (VmHWM): weights, gradients, AdamW moments
#              (16 B per parameter on both sides) plus activations, runtime and allocator;
#              Tessera logs it as "peak memory on this rank", hf_reference.py as peak_rss_mib
#   tokens/s   seq_len x timed steps / their summed step times, the first EXCLUDED steps
#              dropped (the formula of vs_hf.sh)
# and the table gives each Tessera mode's ratio to HF default and to HF checkpointing. Each side
# runs its own default loss: Tessera's chunked head + loss (model.loss_chunk_tokens 2048),
# HF's full fp32 logits (small here: vocabulary 512).
#
# Environment knobs:
#   BENCH_SEQS      sequence lengths (default "2048 4096")
#   BENCH_STEPS     optimizer steps per run (default 3; the first is not timed)
#   BENCH_THREADS   threads for both programs (default: nproc)
#   BENCH_DIR       output folder (default: build/bench/recompute)
#   BENCH_SKIP_BUILD=1  use the existing build/tessera
# Timings are only meaningful on an otherwise idle machine: the script warns when it is not.
# Run from anywhere: bash scripts/bench/recompute_vs_hf.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SEQS="${BENCH_SEQS:-2048 4096}"
STEPS="${BENCH_STEPS:-3}"
EXCLUDED=1
THREADS="${BENCH_THREADS:-$(nproc)}"
BENCH_DIR="${BENCH_DIR:-$ROOT/build/bench/recompute}"
PY="$ROOT/.venv/bin/python"
TESSERA="$ROOT/build/tessera"
TRANSFORMERS_SPEC="${BENCH_TRANSFORMERS_SPEC:-transformers==5.24.0}"
T_START=$SECONDS
log() { printf '[recompute_vs_hf %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }
die() { printf '[recompute_vs_hf] ERROR: %s\n' "$*" >&2; exit 1; }
[[ $STEPS =~ ^[0-9]+$ ]] && ((STEPS > EXCLUDED)) || die "BENCH_STEPS='$STEPS': expected an integer above $EXCLUDED"

DIM=768 N_LAYERS=14 N_HEADS=12 N_KV_HEADS=4 FFN_DIM=2432 VOCAB=512
LR=3e-4 MIN_LR=3e-5 WEIGHT_DECAY=0.1 GRAD_CLIP=1.0 ROPE_THETA=500000 NORM_EPS=1e-5 SEED=1234 LR_WARMUP=1

# ---- environment, build, tokens ----------------------------------------------------------------
# shellcheck source=scripts/bench/hf_peer_setup.sh
source "$ROOT/scripts/bench/hf_peer_setup.sh"
prepare_hf_peer
log "$("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'), threads $THREADS"
warn_if_busy "timings will be skewed"
export OMP_NUM_THREADS="$THREADS"

declare -A PEAK SPEED

# tessera_run SEQ MODE
tessera_run() {
  local seq="$1" mode="$2" run="$BENCH_DIR/tessera-$mode-$1"
  rm -rf "$run"
  "$TESSERA" train "$ROOT/configs/tiny.yaml" \
    --set model.dim=$DIM --set model.n_layers=$N_LAYERS --set model.n_heads=$N_HEADS \
    --set model.n_kv_heads=$N_KV_HEADS --set model.ffn_dim=$FFN_DIM --set model.vocab_size=$VOCAB \
    --set model.rope_theta=$ROPE_THETA --set model.norm_eps=$NORM_EPS --set model.tie_embeddings=true \
    --set model.recompute="$mode" \
    --set train.seq_len="$seq" --set train.micro_batch=1 --set train.global_batch=1 \
    --set train.steps="$STEPS" --set train.warmup_steps=$LR_WARMUP --set train.lr=$LR \
    --set train.min_lr=$MIN_LR --set train.weight_decay=$WEIGHT_DECAY --set train.grad_clip=$GRAD_CLIP \
    --set train.precision=fp32 --set train.threads="$THREADS" --set train.seed=$SEED \
    --set train.log_every=1 --set train.eval_every=0 --set checkpoint.at_end=false --set train.run_dir="$run" \
    --set data.train="${TOKENS%.u16}" --set data.val=[] --set data.shuffle=false --set train.sample_every=0 >"$run.log" 2>&1 \
    || die "Tessera $mode at $seq failed: $run.log"
  PEAK[$seq,tessera-$mode]="$(grep -o 'peak memory on this rank: [0-9.]*' "$run.log" | tail -1 | awk '{print $NF}')"
  SPEED[$seq,tessera-$mode]="$("$PY" - "$run/metrics.jsonl" "$seq" "$EXCLUDED" <<'EOF'
import json, sys
rows = sorted((json.loads(l) for l in open(sys.argv[1]) if l.strip()), key=lambda r: r.get("step", 0))
times = [r["step_time_s"] for r in rows if "step_time_s" in r][int(sys.argv[3]):]
print(f"{int(sys.argv[2]) * len(times) / sum(times):.1f}")
EOF
)"
  [[ -n "${PEAK[$seq,tessera-$mode]}" ]] || die "Tessera $mode at $seq logged no peak memory: $run.log"
  log "seq $seq, Tessera $mode: peak ${PEAK[$seq,tessera-$mode]} MiB, ${SPEED[$seq,tessera-$mode]} tokens/s"
}

# hf_run SEQ CHECKPOINTING(0|1)
hf_run() {
  local seq="$1" ckpt="$2" name; name="hf-$([[ $2 == 1 ]] && echo checkpointing || echo default)"
  local out="$BENCH_DIR/$name-$seq.log"
  "$PY" "$ROOT/scripts/bench/hf_reference.py" \
    --dim $DIM --n-layers $N_LAYERS --n-heads $N_HEADS --n-kv-heads $N_KV_HEADS --ffn-dim $FFN_DIM \
    --vocab-size $VOCAB --seq-len "$seq" --micro-batch 1 --global-batch 1 --steps "$STEPS" \
    --warmup-steps $LR_WARMUP --lr $LR --min-lr $MIN_LR --weight-decay $WEIGHT_DECAY --grad-clip $GRAD_CLIP \
    --rope-theta $ROPE_THETA --norm-eps $NORM_EPS --tie-embeddings 1 --precision fp32 --threads "$THREADS" \
    --data "$TOKENS" --seed $SEED --warmup-steps-excluded $EXCLUDED --gradient-checkpointing "$ckpt" \
    >"$out" 2>&1 || die "hf_reference.py ($name) at $seq failed: $out"
  read -r PEAK[$seq,$name] SPEED[$seq,$name] < <("$PY" -c '
import json, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("{\"impl\"")][-1])
print("%.1f %.1f" % (r["peak_rss_mib"], r["tokens_per_s"]))' "$out")
  log "seq $seq, HF $name: peak ${PEAK[$seq,$name]} MiB, ${SPEED[$seq,$name]} tokens/s"
}

for seq in $SEQS; do
  for mode in none selective full; do tessera_run "$seq" "$mode"; done
  hf_run "$seq" 0
  hf_run "$seq" 1
done

echo
echo "| seq | program | peak MiB | tokens/s | peak vs HF default | speed vs HF default | peak vs HF ckpt | speed vs HF ckpt |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for seq in $SEQS; do
  for name in tessera-none tessera-selective tessera-full hf-default hf-checkpointing; do
    "$PY" -c '
import sys
seq, name, p, s, pd, sd, pc, sc = sys.argv[1:]
p, s, pd, sd, pc, sc = map(float, (p, s, pd, sd, pc, sc))
print(f"| {seq} | {name} | {p:.0f} | {s:.1f} | {p / pd:.2f}x | {s / sd:.2f}x | {p / pc:.2f}x | {s / sc:.2f}x |")' \
      "$seq" "$name" "${PEAK[$seq,$name]}" "${SPEED[$seq,$name]}" "${PEAK[$seq,hf-default]}" \
      "${SPEED[$seq,hf-default]}" "${PEAK[$seq,hf-checkpointing]}" "${SPEED[$seq,hf-checkpointing]}"
  done
done
