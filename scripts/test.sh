#!/usr/bin/env bash
# Runs the whole test suite: sets up the machine if needed, builds Tessera and its tests,
# gathers the sample corpus the training tests read, and runs ctest.
#   scripts/test.sh                 everything
#   scripts/test.sh -L torch        extra arguments go to ctest (here: one label)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/build.sh
scripts/make_sample_corpus.sh
scripts/prepare_sample_data.sh
export TESSERA_SAMPLE_CORPUS="$ROOT/.cache/sample_corpus" TESSERA_SAMPLE_DATA="$ROOT/.cache/sample_data"
# Open MPI refuses root without these; CI runs as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build
# One test at a time: each LibTorch test uses every core, and oversubscribed OpenMP threads
# slow everything down many times over.
start=$SECONDS
ctest --output-on-failure --timeout 1200 "$@"
echo "[test] ctest finished in $((SECONDS - start)) s"
