# Sourced by the benchmarks that run Tessera beside Hugging Face transformers on the byte-level
# token file of vs_hf.sh (recompute_vs_hf.sh, max_seq_vs_hf.sh): the shared preparation.
#
# prepare_hf_peer: the project's .venv (scripts/setup.sh), transformers in it at
# $TRANSFORMERS_SPEC with torch pinned, build/tessera (scripts/build.sh unless
# BENCH_SKIP_BUILD=1), the sample corpus, and $BENCH_DIR/tokens.u16 (token id = byte, 256 after
# each document) wrapped as a Megatron dataset; sets TOKENS. warn_if_busy WHAT: says when the
# machine's load would skew WHAT. Both use the caller's ROOT, PY, TESSERA, BENCH_DIR, log and die.

prepare_hf_peer() {
  [[ -x "$PY" ]] || bash "$ROOT/scripts/setup.sh"
  if ! "$PY" -c "import transformers" 2>/dev/null; then
    log "installing $TRANSFORMERS_SPEC into .venv (torch pinned to the installed version)"
    local pin
    pin="$(mktemp)"
    "$PY" -c "import torch; print('torch==' + torch.__version__)" >"$pin"
    "$PY" -m pip install -q -c "$pin" "$TRANSFORMERS_SPEC"
    rm -f "$pin"
  fi
  if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then bash "$ROOT/scripts/build.sh" >/dev/null || die "scripts/build.sh failed"; fi
  [[ -x "$TESSERA" ]] || die "$TESSERA is missing (run scripts/build.sh)"
  bash "$ROOT/scripts/make_sample_corpus.sh" >/dev/null || die "scripts/make_sample_corpus.sh failed"
  mkdir -p "$BENCH_DIR"
  TOKENS="$BENCH_DIR/tokens.u16"
  "$PY" - "$ROOT/.cache/sample_corpus/train" "$TOKENS" <<'PYEOF'
import numpy as np, os, sys
src, dst = sys.argv[1], sys.argv[2]
parts = []
for n in sorted(n for n in os.listdir(src) if n.endswith(".txt")):
    with open(os.path.join(src, n), "rb") as f:
        parts.append(np.frombuffer(f.read(), dtype=np.uint8).astype("<u2"))
    parts.append(np.array([256], dtype="<u2"))
np.concatenate(parts).tofile(dst)
PYEOF
  "$PY" "$ROOT/scripts/bench/u16_to_megatron.py" "$TOKENS" "${TOKENS%.u16}" >/dev/null || die "cannot wrap the token file"
}

warn_if_busy() {
  local load1 _
  read -r load1 _ </proc/loadavg
  if "$PY" -c "import sys; sys.exit(0 if float('$load1') > 0.5 else 1)"; then
    log "WARNING: the machine is busy (load $load1): $1"
  fi
}
