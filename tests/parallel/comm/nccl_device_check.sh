#!/usr/bin/env bash
# The NCCL backend on a GPU machine (called by scripts/device_check.sh): the NCCL/CUDA smoke
# test, the communicator tests on CUDA with world size 1, then with one rank per GPU, started
# by scripts/launch/local_launch.sh (torchrun-style variables, TCP rendezvous; no MPI needed)
# and, where mpirun exists, by mpirun (MPI bootstrap). Logs go to WORKDIR; the last line of
# WORKDIR/nccl_check_summary.txt is a one-line summary.
#   tests/parallel/comm/nccl_device_check.sh BUILD_DIR WORKDIR
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${1:?usage: nccl_device_check.sh BUILD_DIR WORKDIR}"
WORKDIR="${2:?usage: nccl_device_check.sh BUILD_DIR WORKDIR}"
mkdir -p "$WORKDIR"
BIN="$BUILD_DIR/tests/gpu_comm_tests"
SUMMARY="$WORKDIR/nccl_check_summary.txt"
: >"$SUMMARY"
if [[ ! -x "$BIN" ]]; then
  echo "no $BIN: the NCCL backend was not built (see the configure log's 'Tessera: NCCL' line)" | tee -a "$SUMMARY"
  exit 1
fi
GPUS="$(nvidia-smi -L 2>/dev/null | wc -l)"
((GPUS >= 1)) || GPUS=1
export TESSERA_TEST_TIMEOUT_S="${TESSERA_TEST_TIMEOUT_S:-60}"
rc=0
results=()

run() {  # run NAME LIMIT_S COMMAND...: logs to WORKDIR/nccl_NAME.log
  local name="$1" limit="$2"; shift 2
  local log="$WORKDIR/nccl_$name.log" start=$SECONDS
  (cd "$BUILD_DIR" && timeout -k 5 "$limit" "$@") >"$log" 2>&1
  local r=$? took=$((SECONDS - start))
  local verdict
  verdict="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -oE 'All tests passed \([0-9]+ assertions in [0-9]+ test cases\)|test cases: [0-9]+ \| [0-9]+ passed \| [0-9]+ failed|test cases: [0-9]+ \| [0-9]+ failed' | tail -1)"
  echo "--- $name: exit $r in ${took}s: ${verdict:-no Catch2 summary}"
  ((r == 0)) || { sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E 'FAILED|error|rank [0-9]+:|REQUIRE|CHECK' | head -30; rc=1; }
  results+=("$name $( ((r == 0)) && echo ok || echo "FAILED($r)")")
}

[[ -x "$BUILD_DIR/tests/nccl_core_smoke" ]] && run smoke 60 "$BUILD_DIR/tests/nccl_core_smoke"
run world1 150 "$BIN"
if ((GPUS > 1)); then
  run "tcp_world$GPUS" 200 bash "$ROOT/scripts/launch/local_launch.sh" "$GPUS" "$BIN"
  if command -v mpirun >/dev/null; then
    run "mpi_world$GPUS" 200 mpirun --allow-run-as-root -np "$GPUS" -x TESSERA_TEST_TIMEOUT_S "$BIN"
  fi
else
  # One GPU: the TCP bootstrap path with a world of one still runs (NCCL refuses two ranks on one GPU).
  run tcp_world1 150 bash "$ROOT/scripts/launch/local_launch.sh" 1 "$BIN"
fi
echo "NCCL on $GPUS GPU(s): ${results[*]}" | tee -a "$SUMMARY"
exit "$rc"
