#!/usr/bin/env bash
# No silent hangs: runs comm_failure_probe under mpirun with 4 ranks and checks that every rank
# exits non-zero within the collective timeout + 10 s, each printing its rank, the group, the
# operation and its sequence number (and, where knowable, which ranks had not arrived).
#   failure_test.sh MPIRUN PROBE kill|absent|layout
#     kill    rank 1 dies by SIGKILL inside all_reduce #13 of the world (#1-#6 are the grid's
#             splits: tp, pp, dp, cp, model, embedding; #7-#11 warm-up all-reduces, #12 a barrier)
#     absent  rank 1 never calls all_reduce #13 (alive, sleeping)
#     layout  parallel.tp = 3 on 4 ranks: an error naming the numbers, before any collective
# The time is measured from rank 0 entering the broken collective (it prints the moment) to the
# end of the job, so a slow start-up of oversubscribed ranks does not count.
set -uo pipefail
MPIRUN="$1" PROBE="$2" MODE="$3"
TIMEOUT_S=3
LIMIT=$((TIMEOUT_S + 10))
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# As root and with more ranks than cores (Open MPI reads these; other MPIs ignore them).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
start=$SECONDS
# The outer timeout only keeps a broken build from hanging CI; it is far above LIMIT.
timeout -k 5 120 "$MPIRUN" -np 4 "$PROBE" "$MODE" "$TIMEOUT_S" >"$out" 2>&1
rc=$?
end=$(date +%s.%N)
took=$((SECONDS - start))
fail() { echo "FAIL ($MODE): $*"; echo "---- output:"; cat "$out"; exit 1; }
((rc != 0)) || fail "mpirun exited 0"
# (mpirun itself returns 137 when a rank died of SIGKILL, so the hang check is the clock.)
((took < 115)) || fail "hung: killed by the outer timeout"
if [[ "$MODE" != layout ]]; then
  entered=$(sed -nE 's/^probe: entering the broken all-reduce at ([0-9.]+)$/\1/p' "$out" | head -1)
  [[ -n "$entered" ]] || fail "rank 0 never reached the broken all-reduce"
  awk -v a="$entered" -v b="$end" -v limit="$LIMIT" 'BEGIN { exit !(b - a <= limit) }' ||
    fail "the job ended $(awk -v a="$entered" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s after the broken all-reduce began, more than timeout + 10 = ${LIMIT} s"
  took=$(awk -v a="$entered" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
fi
# "rank R: ..." lines that name the operation and its sequence number.
expect() { grep -qE "$1" "$out" || fail "no line matching: $1"; }
case "$MODE" in
  kill)
    for r in 0 2 3; do
      expect "rank $r: (received .* while waiting .* in all_reduce #13 .*of group world|collective timed out: .*all_reduce #13 .*of group world|communication failed .*all_reduce #13)"
    done
    ;;
  absent)
    # Each waiting rank times out (or, when a faster one already exited and the launcher ends
    # the job, reports the collective it was still waiting in).
    for r in 0 2 3; do
      expect "rank $r: (collective timed out: waited [0-9.]+ s|received .* while waiting [0-9.]+ s) in all_reduce #13 \(float32\[65536\], sum\) of group world \(world ranks 0,1,2,3; this rank is $r of 4\)"
    done
    # Rank 1 is alive, so the others learn where it is, and it is told to exit (or the launcher
    # stops it first).
    expect "rank [023]: +rank 1: not arrived: its last world collective is #12"
    expect "rank 1: (told to exit by a peer: rank [023] waited [0-9.]+ s for it in all_reduce #13 of group world|received .* outside any collective)"
    ;;
  layout)
    expect "rank [0-3]: error: parallel layout .* does not fit the launch: world size 4 is not divisible by tp x pp = 3 x 1 = 3"
    expect "world size from OMPI_COMM_WORLD_SIZE"
    ;;
  *) fail "unknown mode" ;;
esac
echo "PASS ($MODE): every rank exited (mpirun: $rc) ${took} s after the broken all-reduce began"
grep -E "rank [0-9]+: " "$out" | head -20
