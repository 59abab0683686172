#!/usr/bin/env bash
# Starts N copies of a command on this machine with torchrun-style variables (RANK, WORLD_SIZE,
# LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT), for NCCL runs and tests
# where no MPI is installed: NCCL's unique id then travels over TCP from rank 0. Waits for all;
# exits with the first non-zero exit code; when one copy fails the others are stopped with
# SIGTERM (they report what they were waiting in).
#   scripts/launch/local_launch.sh 8 build/tessera train configs/my_run.yaml --set train.device=cuda
set -uo pipefail
N="${1:?usage: local_launch.sh N COMMAND [ARGS...]}"
shift
export MASTER_ADDR=127.0.0.1
export MASTER_PORT="${MASTER_PORT:-$((20000 + $$ % 20000))}"
export WORLD_SIZE="$N" LOCAL_WORLD_SIZE="$N" TESSERA_RUN_ID="${TESSERA_RUN_ID:-local-$$}"
pids=()
for ((r = 0; r < N; r++)); do
  RANK=$r LOCAL_RANK=$r "$@" &
  pids+=($!)
done
rc=0
remaining=$N
while ((remaining > 0)); do
  wait -n -p done_pid
  status=$?
  remaining=$((remaining - 1))
  if ((status != 0 && rc == 0)); then
    rc=$status
    echo "[local_launch] a rank (pid $done_pid) exited with $status: stopping the others" >&2
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  fi
done
exit "$rc"
