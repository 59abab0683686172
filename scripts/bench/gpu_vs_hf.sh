#!/usr/bin/env bash
# GPU training throughput, Tessera against Hugging Face transformers, on the same GPU in one run.
#
# Model: Llama 3.2 1B's shape (dim 2048, 16 layers, 32 heads, 8 kv heads, ffn 8192, vocab 128256,
# tied embeddings, rope_theta 500000), randomly initialised, seq_len 4096, bf16 compute with fp32
# master weights and fp32 AdamW state, micro-batch 1, global batch 4 (4 accumulation micro-steps,
# 16384 tokens per optimizer step), 10 steps of which the first 3 are not timed (CUDA context,
# cuBLAS heuristics, allocator growth).
#   Tessera: build-gpu/tessera train configs/tiny.yaml --set ... (train.device=cuda,
#            train.precision=bf16); per-step step_time_s from RUN_DIR/metrics.jsonl.
#   HF:      scripts/bench/hf_gpu_reference.py: LlamaForCausalLM, eager PyTorch,
#            attn_implementation="sdpa", torch.autocast bf16 with fp32 weights, torch.optim.AdamW
#            (fused=True on cuda: its fastest AdamW).
# Both: the same raw uint16 token file of random ids (uint16 caps ids at 65535, which does not
# matter for speed), the same sequential reading contract, gradient clipping at 1.0.
#
# Figures, computed here the same way for both from the timed steps' wall times:
#   tokens/s = global_batch * seq_len * timed_steps / sum(step_time_s)
#   MFU      = flops_per_token * tokens/s / (peak * 1e12), peak = 989 TFLOP/s (H100/H200 SXM dense
#              bf16), flops_per_token = 6 * matmul_params + 12 * n_layers * dim * seq_len,
#              matmul_params = all linear weights of the blocks + the head's vocab*dim.
#   ratio    = Tessera tokens/s / HF tokens/s (> 1: Tessera is faster).
# The last line printed is: gpu_bench tessera_tokens_per_s=A hf_tokens_per_s=B ratio=R ...
# and BENCH_DIR/results.json holds the same.
#
# Environment:
#   BENCH_SHAPE=1b|tiny    tiny = a seconds-long shape for checking this script (on CPU too)
#   BENCH_DEVICE=cuda|cpu  BENCH_PRECISION=bf16|fp32
#   BENCH_BUILD_DIR        where the tessera binary is (default build-gpu)
#   BENCH_DIR              outputs (default BENCH_BUILD_DIR/gpu_bench)
#   BENCH_PYTHON           python with torch, transformers, numpy (default python3)
#   BENCH_STEPS, BENCH_EXCLUDED, BENCH_GLOBAL, BENCH_MICRO, BENCH_SEQ  override the shape's
#   BENCH_PEAK_TFLOPS      default 989 (cuda), 0 = no MFU (cpu)
#   BENCH_TIMEOUT_S        limit for each side (default 240)
#   BENCH_ONLY=tessera|hf  run one side
#   BENCH_ATEN_TOO=1|0     on cuda, also run Tessera with TESSERA_CUDA_KERNELS=0 (ATen's RMSNorm,
#                          rotary and SwiGLU instead of Tessera's kernels), first; default 1
#   BENCH_CUDA_GRAPHS      Tessera's train.cuda_graphs (default false: both Tessera rows eager, as
#                          the peer is; true captures the micro-step, except in a run that profiles
#                          a step, where graphs are off)
#   BENCH_PROFILE_STEP     profile this step (1-based) on both sides and print the GPU kernels that
#                          took most (default: the last untimed step on cuda, 0 = off, on cpu);
#                          Tessera's Chrome trace is RUN_DIR/profile_step_N.json
# Usage (repository root): bash scripts/bench/gpu_vs_hf.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SHAPE="${BENCH_SHAPE:-1b}"
DEVICE="${BENCH_DEVICE:-cuda}"
PRECISION="${BENCH_PRECISION:-bf16}"
BUILD_DIR="${BENCH_BUILD_DIR:-$ROOT/build-gpu}"
BENCH_DIR="${BENCH_DIR:-$BUILD_DIR/gpu_bench}"
PY="${BENCH_PYTHON:-python3}"
TIMEOUT_S="${BENCH_TIMEOUT_S:-240}"
ONLY="${BENCH_ONLY:-}"
T_START=$SECONDS
log() { printf '[gpu_vs_hf %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }

case "$SHAPE" in
  1b)   DIM=2048 LAYERS=16 HEADS=32 KV=8 FFN=8192 VOCAB=128256 SEQ=4096 MICRO=1 GLOBAL=4 STEPS=10 EXCLUDED=3 ;;
  tiny) DIM=64 LAYERS=2 HEADS=4 KV=2 FFN=128 VOCAB=1024 SEQ=64 MICRO=2 GLOBAL=4 STEPS=4 EXCLUDED=1 ;;
  *) echo "unknown BENCH_SHAPE=$SHAPE (1b or tiny)" >&2; exit 2 ;;
esac
SEQ="${BENCH_SEQ:-$SEQ}" MICRO="${BENCH_MICRO:-$MICRO}" GLOBAL="${BENCH_GLOBAL:-$GLOBAL}"
STEPS="${BENCH_STEPS:-$STEPS}" EXCLUDED="${BENCH_EXCLUDED:-$EXCLUDED}"
if [[ $DEVICE == cuda ]]; then PEAK="${BENCH_PEAK_TFLOPS:-989}"; else PEAK="${BENCH_PEAK_TFLOPS:-0}"; fi
# The profiled step is an untimed one: the profiler's own work stays out of the figures.
if [[ $DEVICE == cuda ]]; then PROFILE_STEP="${BENCH_PROFILE_STEP:-$EXCLUDED}"; else PROFILE_STEP="${BENCH_PROFILE_STEP:-0}"; fi
TIE=1 THETA=500000 LR=3e-4 CLIP=1.0
TESSERA="$BUILD_DIR/tessera"

mkdir -p "$BENCH_DIR"
TOKENS="$BENCH_DIR/tokens.u16"
log "shape $SHAPE: dim $DIM, $LAYERS layers, heads $HEADS/$KV, ffn $FFN, vocab $VOCAB, seq $SEQ, micro $MICRO, global $GLOBAL, $STEPS steps ($EXCLUDED not timed), $PRECISION on $DEVICE, peak $PEAK TFLOP/s"

# Random token ids: enough windows that no sequence repeats within the run.
"$PY" - "$TOKENS" "$VOCAB" "$SEQ" "$((STEPS * GLOBAL + 8))" <<'EOF' || { log "cannot write the token file"; exit 1; }
import numpy as np, os, sys
path, vocab, seq, windows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = windows * seq + 1
ids = np.random.default_rng(0).integers(0, min(vocab, 65536), size=n, dtype=np.uint16)
ids.astype("<u2").tofile(path + ".tmp")
os.replace(path + ".tmp", path)
print(f"[gpu_vs_hf] token file {path}: {n:,} random ids below {min(vocab, 65536)}")
EOF
"$PY" "$ROOT/scripts/bench/u16_to_megatron.py" "$TOKENS" "${TOKENS%.u16}" || { log "cannot wrap the token file"; exit 1; }

# One formula for both sides: tokens/s and MFU from a list of step times.
figures() {  # figures FILE_WITH_STEP_TIMES(one per line) -> "tokens_per_s mfu"
  "$PY" - "$1" "$EXCLUDED" "$((GLOBAL * SEQ))" "$DIM" "$LAYERS" "$HEADS" "$KV" "$FFN" "$VOCAB" "$SEQ" "$PEAK" <<'EOF'
import sys
f, excluded, tok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dim, layers, heads, kv, ffn, vocab, seq = map(int, sys.argv[4:11])
peak = float(sys.argv[11])
times = [float(l) for l in open(f) if l.strip()]
timed = times[excluded:]
if not timed:
    sys.exit("no timed steps")
hd = dim // heads
matmul = layers * (2 * dim * heads * hd + 2 * dim * kv * hd + 3 * dim * ffn) + vocab * dim
fpt = 6.0 * matmul + 12.0 * layers * dim * seq
tps = tok * len(timed) / sum(timed)
print(f"{tps:.1f} {fpt * tps / (peak * 1e12) if peak > 0 else 0.0:.4f}")
EOF
}

# One Tessera run: run_tessera NAME PROFILE_STEP (the environment passes through, e.g.
# TESSERA_CUDA_KERNELS=0) -> T_STATUS, T_TPS, T_MFU, T_LOSS, T_MEM; its run directory is
# BENCH_DIR/NAME.
run_tessera() {
  T_TPS="" T_MFU="" T_STATUS="skipped" T_LOSS="" T_MEM=""
  if [[ ! -x "$TESSERA" ]]; then
    T_STATUS="no binary $TESSERA"
    log "$T_STATUS"
  else
    RUN="$BENCH_DIR/$1"
    rm -rf "$RUN"
    log "Tessera ($1): $TESSERA"
    timeout "$TIMEOUT_S" "$TESSERA" train configs/tiny.yaml \
      --set model.dim=$DIM --set model.n_layers=$LAYERS --set model.n_heads=$HEADS \
      --set model.n_kv_heads=$KV --set model.ffn_dim=$FFN --set model.vocab_size=$VOCAB \
      --set model.tie_embeddings=true --set model.rope_theta=$THETA \
      --set train.seq_len=$SEQ --set train.micro_batch=$MICRO --set train.global_batch=$GLOBAL \
      --set train.steps=$STEPS --set train.warmup_steps=2 --set train.lr=$LR --set train.min_lr=3e-5 \
      --set train.grad_clip=$CLIP --set train.device=$DEVICE --set train.precision=$PRECISION \
      --set train.peak_tflops=$([[ $PEAK == 0 ]] && echo 1 || echo "$PEAK") \
      --set data.train="${TOKENS%.u16}" --set data.val=[] --set data.shuffle=false --set train.sample_every=0 \
      --set train.eval_every=0 --set train.log_every=1 --set train.run_dir="$RUN" \
      --set train.profile_step=$2 --set train.cuda_graphs="${BENCH_CUDA_GRAPHS:-false}" \
      2>&1 | tee "$BENCH_DIR/$1.log" | sed -u 's/^/    [tessera] /'
    rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 ]]; then
      T_STATUS="failed (exit $rc$([[ $rc == 124 ]] && echo ", timed out after ${TIMEOUT_S}s"))"
    elif [[ ! -s "$RUN/metrics.jsonl" ]]; then
      T_STATUS="no metrics.jsonl"
    else
      "$PY" - "$RUN/metrics.jsonl" "$BENCH_DIR/$1_times.txt" >"$BENCH_DIR/$1_last.txt" <<'EOF' \
        && read -r T_LOSS T_MEM T_ROWS <"$BENCH_DIR/$1_last.txt"
import json, sys
rows = sorted((json.loads(l) for l in open(sys.argv[1]) if l.strip()), key=lambda r: r["step"])
with open(sys.argv[2], "w") as f:
    f.write("".join("%r\n" % r["step_time_s"] for r in rows))
last = rows[-1]
print("%.4f %.1f %d" % (last["loss"], last.get("memory_mb", 0) / 1024, len(rows)))
EOF
      if [[ "${T_ROWS:-0}" != "$STEPS" ]]; then
        T_STATUS="metrics.jsonl has ${T_ROWS:-0} steps, expected $STEPS"
      elif read -r T_TPS T_MFU < <(figures "$BENCH_DIR/$1_times.txt"); then
        T_STATUS=ok
      else
        T_STATUS="could not compute figures"
      fi
    fi
    log "Tessera ($1): $T_STATUS ${T_TPS:+($T_TPS tokens/s, MFU $T_MFU)}"
  fi
}

A_TPS="" A_MFU="" A_STATUS="skipped" A_LOSS="" A_MEM=""
T_TPS="" T_MFU="" T_STATUS="skipped" T_LOSS="" T_MEM=""
if [[ "$ONLY" != hf ]]; then
  if [[ $DEVICE == cuda && "${BENCH_ATEN_TOO:-1}" == 1 ]]; then
    # The same run on ATen's compositions instead of Tessera's CUDA kernels: what they gain.
    TESSERA_CUDA_KERNELS=0 run_tessera tessera_aten_run 0
    A_TPS="$T_TPS" A_MFU="$T_MFU" A_STATUS="$T_STATUS" A_LOSS="$T_LOSS" A_MEM="$T_MEM"
  fi
  run_tessera tessera_run "$PROFILE_STEP"
fi

H_TPS="" H_MFU="" H_STATUS="skipped" H_LOSS="" H_MEM=""
if [[ "$ONLY" != tessera ]]; then
  log "HF transformers: scripts/bench/hf_gpu_reference.py"
  rm -f "$BENCH_DIR/hf.json"
  PYTHONUNBUFFERED=1 timeout "$TIMEOUT_S" "$PY" scripts/bench/hf_gpu_reference.py \
    --dim $DIM --n-layers $LAYERS --n-heads $HEADS --n-kv-heads $KV --ffn-dim $FFN --vocab-size $VOCAB \
    --tie-embeddings $TIE --rope-theta $THETA --seq-len $SEQ --micro-batch $MICRO --global-batch $GLOBAL \
    --steps $STEPS --warmup-steps-excluded $EXCLUDED --lr $LR --grad-clip $CLIP --precision $PRECISION \
    --device $DEVICE --peak-tflops $PEAK --data "$TOKENS" --json-out "$BENCH_DIR/hf.json" \
    --profile-step $PROFILE_STEP \
    2>&1 | tee "$BENCH_DIR/hf.log" | sed -u 's/^/    [hf] /'
  rc=${PIPESTATUS[0]}
  if [[ $rc -ne 0 ]]; then
    H_STATUS="failed (exit $rc$([[ $rc == 124 ]] && echo ", timed out after ${TIMEOUT_S}s"))"
  elif [[ ! -s "$BENCH_DIR/hf.json" ]]; then
    H_STATUS="no result JSON"
  else
    grep -oE 'step_time_s=[0-9.]+' "$BENCH_DIR/hf.log" | cut -d= -f2 >"$BENCH_DIR/hf_times.txt"
    "$PY" - "$BENCH_DIR/hf.json" >"$BENCH_DIR/hf_last.txt" <<'EOF' && read -r H_LOSS H_MEM H_PEAK <"$BENCH_DIR/hf_last.txt"
import json, sys
r = json.load(open(sys.argv[1]))
print("%.4f %.1f %.1f" % (r["final_loss"], r.get("memory_allocated_gb") or 0, r.get("peak_memory_gb") or 0))
EOF
    if read -r H_TPS H_MFU < <(figures "$BENCH_DIR/hf_times.txt"); then H_STATUS=ok; else H_STATUS="could not compute figures"; fi
  fi
  log "HF: $H_STATUS ${H_TPS:+($H_TPS tokens/s, MFU $H_MFU)}"
fi

RATIO="-"
if [[ -n "$T_TPS" && -n "$H_TPS" ]]; then
  RATIO="$("$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$T_TPS" "$H_TPS")"
fi
echo
printf '%-8s %-8s %14s %8s %10s %12s  %s\n' impl status tokens_per_s mfu final_loss mem_gb note
printf '%-8s %-8s %14s %8s %10s %12s  %s\n' tessera "${T_STATUS%% *}" "${T_TPS:--}" "${T_MFU:--}" "${T_LOSS:--}" \
  "${T_MEM:--}" "allocated at the last step; ${T_STATUS}"
[[ "$A_STATUS" != skipped ]] && printf '%-8s %-8s %14s %8s %10s %12s  %s\n' t-aten "${A_STATUS%% *}" "${A_TPS:--}" \
  "${A_MFU:--}" "${A_LOSS:--}" "${A_MEM:--}" "Tessera with TESSERA_CUDA_KERNELS=0 (ATen for RMSNorm, add + RMSNorm, rotary, SwiGLU); ${A_STATUS}"
printf '%-8s %-8s %14s %8s %10s %12s  %s\n' hf "${H_STATUS%% *}" "${H_TPS:--}" "${H_MFU:--}" "${H_LOSS:--}" \
  "${H_MEM:--}" "allocated at the end (peak ${H_PEAK:--}); ${H_STATUS}"
# MFU against what this card's matrix unit reached in Tessera's start-up probe, beside the sheet's.
PROBE="$(grep -oE 'GEMM probe: [0-9.e+]+ TFLOP/s' "$BENCH_DIR/tessera_run.log" 2>/dev/null | head -1 | awk '{print $3}')"
if [[ -n "$PROBE" && "$PEAK" != 0 ]]; then
  "$PY" -c "import sys; p, s = float(sys.argv[1]), float(sys.argv[2]); t = [float(x) for x in sys.argv[3:] if x not in ('', '-')]
print(f'measured GEMM peak here {p:.0f} TFLOP/s ({100 * p / s:.0f}% of the sheet\'s {s:.0f}); MFU against it: '
      + ', '.join(f'{n} {float(m) * s / p:.4f}' for n, m in zip(('tessera', 'hf'), sys.argv[3:]) if m not in ('', '-')))" \
    "$PROBE" "$PEAK" "${T_MFU:--}" "${H_MFU:--}"
fi
echo "ratio tessera/hf tokens_per_s = $RATIO   ($SHAPE, seq $SEQ, global $GLOBAL x micro $MICRO, $((STEPS - EXCLUDED)) timed steps, $PRECISION, $DEVICE)"
"$PY" - "$BENCH_DIR/results.json" <<EOF
import json, os, sys
def num(s):
    try: return float(s)
    except ValueError: return None
r = {"shape": "$SHAPE", "device": "$DEVICE", "precision": "$PRECISION", "seq_len": $SEQ,
     "global_batch": $GLOBAL, "micro_batch": $MICRO, "steps": $STEPS, "excluded": $EXCLUDED,
     "peak_tflops": $PEAK,
     "tessera": {"status": "$T_STATUS", "tokens_per_s": num("${T_TPS:-x}"), "mfu": num("${T_MFU:-x}"), "final_loss": num("${T_LOSS:-x}")},
     "tessera_aten": {"status": "$A_STATUS", "tokens_per_s": num("${A_TPS:-x}"), "mfu": num("${A_MFU:-x}"), "final_loss": num("${A_LOSS:-x}")},
     "hf": {"status": "$H_STATUS", "tokens_per_s": num("${H_TPS:-x}"), "mfu": num("${H_MFU:-x}"), "final_loss": num("${H_LOSS:-x}")},
     "ratio": num("$RATIO")}
json.dump(r, open(sys.argv[1] + ".tmp", "w"), indent=1); os.replace(sys.argv[1] + ".tmp", sys.argv[1])
EOF
echo "gpu_bench tessera_tokens_per_s=${T_TPS:-none} hf_tokens_per_s=${H_TPS:-none} ratio=$RATIO tessera_mfu=${T_MFU:-none} hf_mfu=${H_MFU:-none} tessera_aten_tokens_per_s=${A_TPS:-none}"
[[ "$T_STATUS" == ok || "$ONLY" == hf ]] && [[ "$H_STATUS" == ok || "$ONLY" == tessera ]]
