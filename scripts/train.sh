#!/usr/bin/env bash
# Trains the default model (configs/tiny.yaml) on the sample corpus: sets up the machine if
# needed, builds Tessera, gathers the sample corpus and prepares its tokenizer and shards once
# (cached in .cache/), and runs `tessera train`.
#   scripts/train.sh                                   the default run
#   scripts/train.sh configs/other.yaml --set train.steps=50
# Arguments after an optional config file pass through to `tessera train`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

config=configs/tiny.yaml
if [[ $# -gt 0 && "$1" != -* ]]; then
  config="$1"
  shift
fi
[[ -f "$config" ]] || { echo "train.sh: config file '$config' not found" >&2; exit 2; }

scripts/build.sh
scripts/make_sample_corpus.sh
scripts/prepare_sample_data.sh
echo "[train] build/tessera train $config $*"
exec build/tessera train "$config" "$@"
