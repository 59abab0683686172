#!/usr/bin/env bash
# Encode throughput of Tessera's BPE tokenizer against Python tiktoken on the same corpus, in
# the same run: one thread and all threads, for cl100k_base and o200k_base; then `tessera
# preprocess` throughput (MB/s of input) on that corpus. Each figure is the best of 3 runs.
#   scripts/bench/tokenizer_vs_tiktoken.sh [CORPUS_DIR]
# CORPUS_DIR: a directory of UTF-8 text files, one document each (default: the training split
# of the sample corpus, real English and code, built by scripts/make_sample_corpus.sh).
# TESSERA_VOCAB_DIR: where cl100k_base.tiktoken / o200k_base.tiktoken are (default tests/data/vocab).
# The last line is `tessera_mb_per_s=A tiktoken_mb_per_s=B ratio=A/B` for cl100k_base, one thread.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CORPUS="${1:-}"
VOCAB_DIR="${TESSERA_VOCAB_DIR:-$ROOT/tests/data/vocab}"
PY="$ROOT/.venv/bin/python"

[[ -x build/tessera ]] || scripts/build.sh
if [[ -z "$CORPUS" ]]; then
  scripts/make_sample_corpus.sh >/dev/null
  CORPUS="$ROOT/.cache/sample_corpus/train"
fi
[[ -f "$VOCAB_DIR/cl100k_base.tiktoken" ]] || { echo "no cl100k_base.tiktoken in $VOCAB_DIR" >&2; exit 1; }
"$PY" -c "import tiktoken" 2>/dev/null || "$PY" -c "
import sys; sys.path.insert(0, 'tests/data')
from tiktoken_parity_test import ensure_tiktoken; ensure_tiktoken()"

echo "[bench] $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "[bench] load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "[bench] corpus: $CORPUS ($(find "$CORPUS" -type f | wc -l) files, $(du -sb "$CORPUS" | cut -f1) bytes)"

declare -A ours theirs
for enc in cl100k_base o200k_base; do
  tok="$enc:$VOCAB_DIR/$enc.tiktoken"
  for threads in 1 0; do
    line=$(build/tessera tokenizer bench --tokenizer "$tok" --threads "$threads" --repeat 3 "$CORPUS")
    mbs=$(sed 's/.*mb_per_s=\([0-9.]*\).*/\1/' <<<"$line")
    ours[$enc.$threads]=$mbs
    echo "[bench] tessera  $enc threads=$([[ $threads == 0 ]] && nproc || echo 1): $mbs MB/s ($line)"
  done
  out=$(TIKTOKEN_CACHE_DIR= "$PY" - "$enc" "$VOCAB_DIR" "$CORPUS" <<'PYEOF'
import glob, os, sys, time
sys.path.insert(0, "tests/data")
from tiktoken_parity_test import reference
enc_name, vocab_dir, corpus = sys.argv[1:4]
enc = reference(enc_name, vocab_dir, "tiktoken_ext")
files = sorted(p for p in glob.glob(os.path.join(corpus, "**", "*"), recursive=True) if os.path.isfile(p))
docs = [open(p, encoding="utf-8").read() for p in files]
size = sum(len(d.encode("utf-8")) for d in docs)
def best(fn):
    t = 1e30
    for _ in range(3):
        t0 = time.perf_counter(); fn(); t = min(t, time.perf_counter() - t0)
    return t
one = best(lambda: [enc.encode_ordinary(d) for d in docs])
threads = os.cpu_count() or 1
many = best(lambda: enc.encode_ordinary_batch(docs, num_threads=threads))
print("%.2f %.2f %d" % (size / 1e6 / one, size / 1e6 / many, threads))
PYEOF
)
  read -r t1 tn nthreads <<<"$out"
  theirs[$enc.1]=$t1
  theirs[$enc.0]=$tn
  echo "[bench] tiktoken $enc threads=1: $t1 MB/s; threads=$nthreads: $tn MB/s"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for workers in 1 0; do
  best=0
  for _ in 1 2 3; do
    line=$(build/tessera preprocess --tokenizer "cl100k_base:$VOCAB_DIR/cl100k_base.tiktoken" --output-prefix "$tmp/p" \
             --workers "$workers" --no-progress "$CORPUS" 2>&1 | head -1)
    mbs=$(sed 's/.*(\([0-9.]*\) MB\/s.*/\1/' <<<"$line")
    best=$(awk -v a="$best" -v b="$mbs" 'BEGIN {print (b > a) ? b : a}')
  done
  echo "[bench] tessera preprocess cl100k_base workers=$([[ $workers == 0 ]] && nproc || echo 1): $best MB/s"
done
echo "[bench] load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for enc in cl100k_base o200k_base; do
  echo "[bench] $enc ratio threads=1: $(awk -v a="${ours[$enc.1]}" -v b="${theirs[$enc.1]}" 'BEGIN {printf "%.2f", a / b}')" \
       "threads=all: $(awk -v a="${ours[$enc.0]}" -v b="${theirs[$enc.0]}" 'BEGIN {printf "%.2f", a / b}')"
done
a=${ours[cl100k_base.1]}
b=${theirs[cl100k_base.1]}
echo "tessera_mb_per_s=$a tiktoken_mb_per_s=$b ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')"
