#!/usr/bin/env bash
# Turns the sample corpus (scripts/make_sample_corpus.sh) into what a BPE training run reads:
# a byte-level BPE vocabulary trained on the corpus's training split, and Megatron-format shards
# of its text documents, its code documents (so a run can blend them by weight) and its
# held-out split.
#   scripts/prepare_sample_data.sh [CORPUS_DIR] [OUT_DIR]
#     CORPUS_DIR defaults to .cache/sample_corpus, OUT_DIR to .cache/sample_data
#   TESSERA_SAMPLE_VOCAB=N   ranks of the trained vocabulary (default 4096; +1 for <|endoftext|>)
# Output: OUT_DIR/tokenizer.tiktoken (+ tokenizer.json), OUT_DIR/{text,code,val}.{bin,idx} and
# OUT_DIR/COMPLETE, written last. A complete OUT_DIR built with the same settings is reused.
# Needs build/tessera (scripts/build.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="${1:-$ROOT/.cache/sample_corpus}"
OUT="${2:-$ROOT/.cache/sample_data}"
VOCAB="${TESSERA_SAMPLE_VOCAB:-4096}"
TESSERA="${TESSERA_BIN:-$ROOT/build/tessera}"

[[ -x "$TESSERA" ]] || { echo "[sample-data] $TESSERA not found: run scripts/build.sh" >&2; exit 1; }
[[ -f "$CORPUS/COMPLETE" && -f "$CORPUS/SOURCES.txt" ]] || {
  echo "[sample-data] no complete corpus at $CORPUS: run scripts/make_sample_corpus.sh" >&2; exit 1; }

stamp="vocab=$VOCAB corpus=$(md5sum < "$CORPUS/COMPLETE" | cut -c1-16)"
if [[ -f "$OUT/COMPLETE" && "$(cat "$OUT/COMPLETE")" == "$stamp" ]]; then
  echo "[sample-data] using cached $OUT ($stamp)"
  exit 0
fi

tmp="$OUT.tmp.$$"
rm -rf -- "$tmp"
trap 'rm -rf -- "$tmp"' EXIT
mkdir -p "$tmp"
echo "[sample-data] training a $VOCAB-rank BPE vocabulary on $CORPUS/train"
"$TESSERA" tokenizer train --vocab-size "$VOCAB" --output "$tmp/tokenizer.tiktoken" "$CORPUS/train"
# SOURCES.txt: document <TAB> kind/source <TAB> original path.
awk -F'\t' -v dir="$CORPUS" '$1 ~ /^train\// && $2 ~ /^text\// {print dir "/" $1}' "$CORPUS/SOURCES.txt" > "$tmp/text.list"
awk -F'\t' -v dir="$CORPUS" '$1 ~ /^train\// && $2 ~ /^code\// {print dir "/" $1}' "$CORPUS/SOURCES.txt" > "$tmp/code.list"
for part in text code; do
  echo "[sample-data] preprocessing the $part documents ($(wc -l < "$tmp/$part.list") files)"
  "$TESSERA" preprocess --tokenizer "$tmp/tokenizer.tiktoken" --output-prefix "$tmp/$part" --no-progress \
    --files-from "$tmp/$part.list"
done
echo "[sample-data] preprocessing the held-out split"
"$TESSERA" preprocess --tokenizer "$tmp/tokenizer.tiktoken" --output-prefix "$tmp/val" --no-progress "$CORPUS/val"
rm -f "$tmp"/*.list
echo "$stamp" > "$tmp/COMPLETE"
rm -rf -- "$OUT"
mv -T -- "$tmp" "$OUT"
trap - EXIT
echo "[sample-data] wrote $OUT"
