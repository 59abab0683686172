#!/usr/bin/env bash
# Crash safety under mpirun: one rank of a 4-rank job is killed with SIGKILL in the middle of
# saving step 2 (mpirun then ends the others); the checkpoint directory must still hold step 1,
# intact, as the latest valid checkpoint. Then the same with rank 0 killed right before the
# manifest's rename, and with every rank surviving (step 2 must win).
# usage: checkpoint_crash_mpi_test.sh MPIEXEC PROBE
set -u
MPIEXEC=$1
PROBE=$2
DIR=$(mktemp -d "${TMPDIR:-/tmp}/tessera-ckpt-crash-mpi.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

run_case() {  # POINT RANK EXPECTED_STEP
  local point=$1 rank=$2 expected=$3 case_dir="$DIR/$1-$2"
  mkdir -p "$case_dir"
  echo "== kill rank $rank at $point (expect step $expected)"
  "$MPIEXEC" -np 4 "$PROBE" "$case_dir" kill "$point" "$rank" >"$case_dir.log" 2>&1
  local rc=$?
  [[ $rc -ne 0 ]] || fail "the job survived a SIGKILL at $point (log: $(cat "$case_dir.log"))"
  "$PROBE" "$case_dir" expect "$expected" || fail "after a kill at $point on rank $rank"
}

run_case record:1 2 1
run_case shard_committed 3 1
run_case manifest_before_rename 0 1
run_case committed 0 2
echo "PASS"
