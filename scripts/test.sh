#!/usr/bin/env bash
# Runs the whole test suite: sets up the machine if needed, builds Tessera and its tests,
# compiles the CUDA-only code against a CUDA LibTorch (scripts/cuda_build_check.sh), gathers the
# sample corpus the training tests read, and runs ctest.
#   scripts/test.sh                 everything
#   scripts/test.sh -L torch        extra arguments go to ctest (here: one label)
#   scripts/test.sh --asan          the unit tests under AddressSanitizer + UBSan (build-asan/)
#   scripts/test.sh --tsan          the unit tests under ThreadSanitizer (build-tsan/)
# The sanitizer runs take the Catch2 unit tests only (not the mpirun parity, checkpoint-resume or
# Slurm suites); docs/troubleshooting.md says how to read their reports.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ ${1:-} == --asan || ${1:-} == --tsan ]]; then
  mode="${1#--}"
  shift
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  if [[ $mode == asan ]]; then
    BUILD_DIR="$ROOT/build-asan" scripts/build.sh -DTESSERA_SANITIZE=address -DTESSERA_WITH_CUDA=OFF
    # LibTorch is not instrumented and keeps some allocations until exit: its own leaks are
    # suppressed by library (tests/sanitizers/lsan.supp); a leak in Tessera's code still fails.
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_init_order=1"
    export LSAN_OPTIONS="suppressions=$ROOT/tests/sanitizers/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  else
    BUILD_DIR="$ROOT/build-tsan" scripts/build.sh -DTESSERA_SANITIZE=thread -DTESSERA_WITH_CUDA=OFF
    # LibTorch's OpenMP runtime (libgomp) is not instrumented: its synchronisation is invisible to
    # TSan, so races reported inside it are suppressed (tests/sanitizers/tsan.supp); one thread
    # per test keeps ATen's parallel_for on the calling thread.
    export TSAN_OPTIONS="suppressions=$ROOT/tests/sanitizers/tsan.supp:halt_on_error=1:second_deadlock_stack=1"
    export OMP_NUM_THREADS=1
  fi
  scripts/make_sample_corpus.sh
  scripts/prepare_sample_data.sh
  export TESSERA_SAMPLE_CORPUS="$ROOT/.cache/sample_corpus" TESSERA_SAMPLE_DATA="$ROOT/.cache/sample_data"
  cd "build-$mode"
  start=$SECONDS
  # The Catch2 unit tests are registered as <executable>.<test case>.
  ctest --output-on-failure --timeout 1800 -R '_tests\.' -LE 'mpi|gpu' "$@"
  echo "[test] $mode: ctest finished in $((SECONDS - start)) s"
  exit 0
fi

scripts/build.sh
# The CUDA-only code against a CUDA LibTorch, warnings as errors (skipped where there is no nvcc):
# before the tests, so that ctest's summary stays the last thing printed.
scripts/cuda_build_check.sh
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
