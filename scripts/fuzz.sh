#!/usr/bin/env bash
# Builds the libFuzzer targets of Tessera's file readers (fuzz/: clang, AddressSanitizer +
# UndefinedBehaviorSanitizer, no LibTorch) into build-fuzz/ and runs each for SECONDS, starting
# from its seed corpus in fuzz/corpus/<target>/. New inputs the fuzzer finds go to
# build-fuzz/corpus/<target>/ (the seeds stay untouched); a crash stops the run, leaves the
# input as build-fuzz/artifacts/<target>/crash-*, and exits non-zero.
#   scripts/fuzz.sh 20                     every target, 20 s each
#   scripts/fuzz.sh 600 checkpoint_manifest   one target, 10 minutes
# docs/fuzzing.md describes the targets and what the runs found.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:?usage: scripts/fuzz.sh SECONDS [target...]}"
shift
BUILD_DIR="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"

pick_clang() {
  for v in "" -19 -18 -17 -16 -15 -14; do
    if command -v "clang++$v" >/dev/null && command -v "clang$v" >/dev/null; then
      echo "$v"
      return 0
    fi
  done
  return 1
}
if ! suffix="$(pick_clang)"; then
  echo "[fuzz] clang is missing: run scripts/setup.sh (it installs clang and libclang-rt-dev)" >&2
  exit 2
fi

export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-8G}"
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  echo "[fuzz] configuring $BUILD_DIR with clang++$suffix"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DTESSERA_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER="clang$suffix" -DCMAKE_CXX_COMPILER="clang++$suffix" \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  # Every target fuzz/CMakeLists.txt builds (TESSERA_FUZZ_TARGETS): the list lives there alone.
  for bin in "$BUILD_DIR"/fuzz/*_fuzzer; do
    name="$(basename "$bin")"
    targets+=("${name%_fuzzer}")
  done
fi
# Report every UBSan finding as a crash; ASan: no leak reports from the readers' error paths
# would be acceptable either, so leak checking stays on.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1"
failed=()
for t in "${targets[@]}"; do
  bin="$BUILD_DIR/fuzz/${t}_fuzzer"
  [[ -x "$bin" ]] || { echo "[fuzz] unknown target '$t' (no $bin)" >&2; exit 2; }
  corpus="$BUILD_DIR/corpus/$t" artifacts="$BUILD_DIR/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  echo "[fuzz] $t: ${SECONDS_EACH} s from the seeds in fuzz/corpus/$t"
  log="$BUILD_DIR/artifacts/$t.log"
  # -rss_limit_mb: a reader that believes a size from the file and allocates it is a finding.
  if "$bin" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
       -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "$ROOT/fuzz/corpus/$t" >"$log" 2>&1; then
    echo "[fuzz] $t: clean ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs," \
         "$(ls "$corpus" | wc -l) corpus inputs)"
  else
    echo "[fuzz] $t: FAILED; the end of $log:" >&2
    tail -40 "$log" >&2
    failed+=("$t")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "[fuzz] failures: ${failed[*]} (inputs in $BUILD_DIR/artifacts/)" >&2
  exit 1
fi
echo "[fuzz] all ${#targets[@]} targets clean"
