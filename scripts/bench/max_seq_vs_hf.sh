#!/usr/bin/env bash
# The longest sequence trainable in a fixed memory budget: Tessera's model.recompute none /
# selective / full against Hugging Face transformers' LlamaForCausalLM by default and with
# gradient_checkpointing_enable(), on this machine's CPUs, in one script run.
#
# What is measured: each program trains the same small Llama-style model (dim 512, 6 layers, 8/2
# heads, ffn 1536, byte-level vocabulary of 512, tied embeddings: 18.4M parameters) from random
# init on the same token file as recompute_vs_hf.sh, fp32, one sequence per micro-batch and per
# step, for 2 optimizer steps with the recipe of recompute_vs_hf.sh. Two steps, because
# torch.optim.AdamW creates its moments (8 B per parameter) in the first optimizer step, so only
# the second step's forward and backward run with everything a long training run holds; the
# second step is the timed one. For each program the sequence length starts at BENCH_MIN_SEQ and doubles
# while the run fits, up to BENCH_MAX_SEQ; between the longest that fit and the first that did
# not, one more run at the midpoint (rounded down to a multiple of 1024). A run fits when it
# completes and its peak resident set (VmHWM: weights, gradients, AdamW moments, activations,
# runtime and allocator; Tessera logs it as "peak memory on this rank", hf_reference.py as
# peak_rss_mib) is at most BENCH_BUDGET_MIB. A program stops growing at its first run that does
# not fit. The table gives, per program, the longest fitting sequence, its peak MiB and tokens/s
# (seq_len / the second step's time) and each program's longest sequence over HF default's and
# over HF checkpointing's; ">=" marks a program that still fit at BENCH_MAX_SEQ.
#
# How the budget is enforced: a watcher reads the run's /proc/PID/status every 0.1 s and kills it
# (SIGKILL) as soon as its VmHWM exceeds the budget, so that a run over budget costs only the time
# to reach it. VmHWM only grows, so a spike between two reads is still seen at the next one; the
# verdict of a completed run is its own peak report. Not used: an address-space limit (prlimit
# --as / ulimit -v) counts virtual reservations, not resident memory: mapped libraries, thread
# stacks and allocator arenas put a run's VmPeak ~0.5 GiB above its VmHWM (at 2048 tokens: HF
# 1817 vs 1338 MiB, Tessera 1545 vs 1025 MiB), so under --as=1300MiB both programs failed to
# allocate at 811 and 839 MiB resident; a memory cgroup would need a cgroup of its own, which
# this machine's hierarchy does not give a user script.
#
# Each side runs its own default loss: Tessera's chunked head + loss (model.loss_chunk_tokens
# 2048), HF's full fp32 logits (vocabulary 512: 2 KiB per token per copy). Tessera runs with
# train.peak_tflops=1, which skips the start-up matrix-product probe that only sets the MFU basis.
#
# Environment knobs:
#   BENCH_BUDGET_MIB  the memory budget per process, MiB (default 4096)
#   BENCH_MIN_SEQ     the first sequence length tried (default 2048)
#   BENCH_MAX_SEQ     the longest sequence length tried (default 16384; the runtime grows with its
#                     square, as the attention's cost does: 36 min in all on 2 busy cores, most of
#                     it the 16384-token runs)
#   BENCH_PROGRAMS    which programs (default "tessera-none tessera-selective tessera-full
#                     hf-default hf-checkpointing")
#   BENCH_THREADS     threads for both programs (default: nproc)
#   BENCH_DIR         output folder (default: build/bench/max_seq)
#   BENCH_SKIP_BUILD=1  use the existing build/tessera
#   BENCH_TESSERA     the tessera binary to run (default: build/tessera; a copy keeps a long run on
#                     one build while build/ is rebuilt)
# Run from anywhere: bash scripts/bench/max_seq_vs_hf.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BUDGET="${BENCH_BUDGET_MIB:-4096}"
MIN_SEQ="${BENCH_MIN_SEQ:-2048}"
MAX_SEQ="${BENCH_MAX_SEQ:-16384}"
PROGRAMS="${BENCH_PROGRAMS:-tessera-none tessera-selective tessera-full hf-default hf-checkpointing}"
STEPS=2
EXCLUDED=1
THREADS="${BENCH_THREADS:-$(nproc)}"
BENCH_DIR="${BENCH_DIR:-$ROOT/build/bench/max_seq}"
PY="$ROOT/.venv/bin/python"
TESSERA="${BENCH_TESSERA:-$ROOT/build/tessera}"
TRANSFORMERS_SPEC="${BENCH_TRANSFORMERS_SPEC:-transformers==5.24.0}"
T_START=$SECONDS
log() { printf '[max_seq_vs_hf %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }
die() { printf '[max_seq_vs_hf] ERROR: %s\n' "$*" >&2; exit 1; }
for v in BUDGET MIN_SEQ MAX_SEQ; do [[ ${!v} =~ ^[0-9]+$ ]] && ((${!v} > 0)) || die "$v='${!v}': expected a positive integer"; done
((MIN_SEQ <= MAX_SEQ)) || die "BENCH_MIN_SEQ ($MIN_SEQ) is above BENCH_MAX_SEQ ($MAX_SEQ)"
for p in $PROGRAMS; do
  [[ $p =~ ^(tessera-(none|selective|full)|hf-(default|checkpointing))$ ]] || die "unknown program '$p' in BENCH_PROGRAMS"
done

DIM=512 N_LAYERS=6 N_HEADS=8 N_KV_HEADS=2 FFN_DIM=1536 VOCAB=512
LR=3e-4 MIN_LR=3e-5 WEIGHT_DECAY=0.1 GRAD_CLIP=1.0 ROPE_THETA=500000 NORM_EPS=1e-5 SEED=1234 LR_WARMUP=1

# ---- environment, build, tokens (as recompute_vs_hf.sh) -----------------------------------------
# shellcheck source=scripts/bench/hf_peer_setup.sh
source "$ROOT/scripts/bench/hf_peer_setup.sh"
prepare_hf_peer
log "$("$PY" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'), threads $THREADS, budget $BUDGET MiB, sequences $MIN_SEQ..$MAX_SEQ"
warn_if_busy "tokens/s will be skewed (the peaks are not)"
export OMP_NUM_THREADS="$THREADS"

# run_watched LOG CMD...: runs CMD with its output in LOG, killing it once its VmHWM exceeds the
# budget. Sets RUN_RC (the exit status; 137 when killed), RUN_KILLED (0|1), RUN_HWM_MIB (the
# largest VmHWM the watcher read).
run_watched() {
  local out="$1"; shift
  "$@" >"$out" 2>&1 &
  local pid=$! hwm=0 kb line
  RUN_KILLED=0
  while kill -0 "$pid" 2>/dev/null; do
    kb=0
    while read -r line; do
      [[ $line == VmHWM:* ]] && { kb="${line//[^0-9]/}"; break; }
    done 2>/dev/null <"/proc/$pid/status" || true
    ((kb > hwm)) && hwm=$kb
    if ((hwm > BUDGET * 1024)); then
      kill -KILL "$pid" 2>/dev/null || true
      RUN_KILLED=1
      break
    fi
    sleep 0.1
  done
  RUN_RC=0
  wait "$pid" 2>/dev/null || RUN_RC=$?
  RUN_HWM_MIB="$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
}

# run_program NAME SEQ: one run; sets FIT (0|1), PEAK_MIB and SPEED (tokens/s, or "-").
run_program() {
  local name="$1" seq="$2" out="$BENCH_DIR/$1-$2.log"
  local t0=$SECONDS
  PEAK_MIB="" SPEED="-"
  case "$name" in
    tessera-*)
      local mode="${name#tessera-}" run="$BENCH_DIR/$name-$seq"
      rm -rf "$run"
      run_watched "$out" "$TESSERA" train "$ROOT/configs/tiny.yaml" \
        --set model.dim=$DIM --set model.n_layers=$N_LAYERS --set model.n_heads=$N_HEADS \
        --set model.n_kv_heads=$N_KV_HEADS --set model.ffn_dim=$FFN_DIM --set model.vocab_size=$VOCAB \
        --set model.rope_theta=$ROPE_THETA --set model.norm_eps=$NORM_EPS --set model.tie_embeddings=true \
        --set model.recompute="$mode" \
        --set train.seq_len="$seq" --set train.micro_batch=1 --set train.global_batch=1 \
        --set train.steps=$STEPS --set train.warmup_steps=$LR_WARMUP --set train.lr=$LR \
        --set train.min_lr=$MIN_LR --set train.weight_decay=$WEIGHT_DECAY --set train.grad_clip=$GRAD_CLIP \
        --set train.precision=fp32 --set train.threads="$THREADS" --set train.seed=$SEED \
        --set train.peak_tflops=1 --set train.log_every=1 --set train.eval_every=0 \
        --set checkpoint.at_end=false --set train.run_dir="$run" \
        --set data.train="${TOKENS%.u16}" --set data.val=[] --set data.shuffle=false --set train.sample_every=0
      if ((RUN_RC == 0)); then
        PEAK_MIB="$(grep -o 'peak memory on this rank: [0-9.]*' "$out" | tail -1 | awk '{print $NF}')"
        [[ -n $PEAK_MIB ]] || die "$name at $seq logged no peak memory: $out"
        SPEED="$("$PY" - "$run/metrics.jsonl" "$seq" "$EXCLUDED" <<'EOF'
import json, sys
rows = sorted((json.loads(l) for l in open(sys.argv[1]) if l.strip()), key=lambda r: r.get("step", 0))
times = [r["step_time_s"] for r in rows if "step_time_s" in r][int(sys.argv[3]):]
print(f"{int(sys.argv[2]) * len(times) / sum(times):.1f}")
EOF
)"
      fi
      ;;
    hf-*)
      local ckpt=0; [[ $name == hf-checkpointing ]] && ckpt=1
      run_watched "$out" "$PY" "$ROOT/scripts/bench/hf_reference.py" \
        --dim $DIM --n-layers $N_LAYERS --n-heads $N_HEADS --n-kv-heads $N_KV_HEADS --ffn-dim $FFN_DIM \
        --vocab-size $VOCAB --seq-len "$seq" --micro-batch 1 --global-batch 1 --steps $STEPS \
        --warmup-steps $LR_WARMUP --lr $LR --min-lr $MIN_LR --weight-decay $WEIGHT_DECAY --grad-clip $GRAD_CLIP \
        --rope-theta $ROPE_THETA --norm-eps $NORM_EPS --tie-embeddings 1 --precision fp32 --threads "$THREADS" \
        --data "$TOKENS" --seed $SEED --warmup-steps-excluded $EXCLUDED --gradient-checkpointing "$ckpt"
      if ((RUN_RC == 0)); then
        read -r PEAK_MIB SPEED < <("$PY" -c '
import json, sys
r = json.loads([l for l in open(sys.argv[1]) if l.startswith("{\"impl\"")][-1])
print("%.1f %.1f" % (r["peak_rss_mib"], r["tokens_per_s"]))' "$out")
      fi
      ;;
  esac
  if ((RUN_KILLED)); then
    FIT=0 PEAK_MIB="$RUN_HWM_MIB"
    log "$name, seq $seq: over budget, stopped at ${PEAK_MIB} MiB after $((SECONDS - t0)) s"
  elif ((RUN_RC != 0)); then
    # Out of memory, killed by the kernel, or a failure that is not about memory: the log says.
    FIT=0 PEAK_MIB="$RUN_HWM_MIB"
    log "$name, seq $seq: FAILED (exit $RUN_RC, peak read ${PEAK_MIB} MiB) after $((SECONDS - t0)) s: $out"
    tail -3 "$out" | sed 's/^/    /'
  else
    FIT="$(awk -v p="$PEAK_MIB" -v b="$BUDGET" 'BEGIN { print (p <= b) ? 1 : 0 }')"
    log "$name, seq $seq: peak $PEAK_MIB MiB ($( ((FIT)) && echo fits || echo over budget)), $SPEED tokens/s, $((SECONDS - t0)) s"
  fi
}

declare -A BEST BEST_PEAK BEST_SPEED FIRST_OVER OVER_PEAK
# try NAME SEQ: runs it and records it as the longest that fit or the first over budget.
try() {
  run_program "$1" "$2"
  if ((FIT)); then
    BEST[$1]=$2 BEST_PEAK[$1]=$PEAK_MIB BEST_SPEED[$1]=$SPEED
  else
    FIRST_OVER[$1]=$2 OVER_PEAK[$1]=$PEAK_MIB
  fi
}
for name in $PROGRAMS; do
  BEST[$name]=0 BEST_PEAK[$name]="-" BEST_SPEED[$name]="-" FIRST_OVER[$name]=0 OVER_PEAK[$name]="-"
  seq=$MIN_SEQ
  while ((seq <= MAX_SEQ)); do
    try "$name" "$seq"
    ((FIT)) || break
    seq=$((seq * 2))
  done
  # One bisection step between the longest that fit and the first that did not.
  if ((BEST[$name] > 0 && FIRST_OVER[$name] > 0)); then
    mid=$(((BEST[$name] + FIRST_OVER[$name]) / 2 / 1024 * 1024))
    if ((mid > BEST[$name] && mid < FIRST_OVER[$name])); then try "$name" "$mid"; fi
  fi
done

echo
echo "Budget $BUDGET MiB per process; dim $DIM, $N_LAYERS layers, $N_HEADS/$N_KV_HEADS heads, ffn $FFN_DIM, vocabulary $VOCAB, fp32, 1 sequence per step, $STEPS steps."
echo
echo "| program | longest seq in budget | its peak MiB | its tokens/s | first seq over | its peak MiB | longest seq vs HF default | vs HF ckpt |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for name in $PROGRAMS; do
  "$PY" -c '
import sys
name, best, peak, speed, over, opeak, hd, hd_over, hc, hc_over = sys.argv[1:]
best, over, hd, hd_over, hc, hc_over = map(int, (best, over, hd, hd_over, hc, hc_over))
# A program that never went over budget fit every length it tried: its longest is a lower bound.
capped = {"me": best > 0 and over == 0, "hd": hd > 0 and hd_over == 0, "hc": hc > 0 and hc_over == 0}
def seq(s, c): return "none" if s == 0 else (">= " if c else "") + str(s)
def ratio(ref, key):
    if ref == 0 or best == 0 or (capped["me"] and capped[key]): return "-"
    sign = ">= " if capped["me"] else ("<= " if capped[key] else "")
    return sign + "%.2fx" % (best / ref)
label = name.replace("-", " ", 1).replace("hf ", "HF ")
print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (label, seq(best, capped["me"]), peak, speed,
      str(over) if over else "-", opeak, ratio(hd, "hd"), ratio(hc, "hc")))' \
    "$name" "${BEST[$name]}" "${BEST_PEAK[$name]}" "${BEST_SPEED[$name]}" "${FIRST_OVER[$name]}" \
    "${OVER_PEAK[$name]}" "${BEST[hf-default]:-0}" \
    "${FIRST_OVER[hf-default]:-0}" "${BEST[hf-checkpointing]:-0}" "${FIRST_OVER[hf-checkpointing]:-0}"
done
log "done"
