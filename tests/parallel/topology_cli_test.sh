#!/usr/bin/env bash
# `tessera topology`: prints the rank table of a layout, and stops with exit code 2 and a message
# that shows the numbers when the layout does not fit the world size.
# Usage: topology_cli_test.sh PATH/TO/tessera
set -uo pipefail
TESSERA="$1"
failures=0
passes=0
expect() {  # expect CODE PATTERN -- ARGS...
  local code="$1" pattern="$2"; shift 3
  local out rc
  out=$("$TESSERA" "$@" 2>&1); rc=$?
  if [[ $rc -ne $code ]] || [[ "$out" != *"$pattern"* ]]; then
    echo "FAIL: tessera $* -> exit $rc (want $code), output:"; echo "$out" | head -8
    echo "      expected to contain: $pattern"
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}
# Without a launcher --world is needed for more than one rank.
expect 0 "world 1 = tp 1 x pp 1 x dp 1, order tp-dp-pp" -- topology
expect 0 "world 8 = tp 2 x pp 2 x dp 2, order tp-dp-pp" -- topology --world 8 --set parallel.tp=2 --set parallel.pp=2
# rank = tp + 2 * (dp + 2 * pp): rank 5 is tp 1, dp 0, pp 1.
expect 0 "    5    1    1    0" -- topology --world 8 --set parallel.tp=2 --set parallel.pp=2
expect 0 "world 8 = tp 4 x pp 1 x dp 2, order dp-pp-tp" -- topology --world 8 --set parallel.tp=4 --set parallel.order=dp-pp-tp
expect 0 "tp groups: [0,1] [2,3] [4,5] [6,7]" -- topology --world 8 --set parallel.tp=2 --set parallel.pp=2
expect 0 "embedding groups: [0,4] [1,5] [2,6] [3,7]" -- topology --world 8 --set parallel.tp=2 --set parallel.pp=2
expect 2 "world size 8 != tp x pp x dp = 2 x 2 x 3 = 12" -- topology --world 8 --set parallel.tp=2 --set parallel.pp=2 --set parallel.dp=3
expect 2 "world size 6 is not divisible by tp x pp = 4 x 1 = 4" -- topology --world 6 --set parallel.tp=4
expect 2 "parallel.order = 'tp-tp-dp': expected tp, pp, dp and optionally cp" -- topology --world 4 --set parallel.order=tp-tp-dp
# Context parallelism: rank = tp + 2 * (cp + 2 * (dp + 2 * pp)) under tp-cp-dp-pp, worked by hand:
# rank 6 is tp 0, cp 1, dp 1, pp 0; the dp x cp ranks of tp 0 pp 0 are 0 2 4 6.
expect 0 "world 8 = tp 2 x cp 2 x pp 1 x dp 2, order tp-cp-dp-pp" -- topology --world 8 --set parallel.tp=2 --set parallel.cp=2
expect 0 "    6    0    1    0    1" -- topology --world 8 --set parallel.tp=2 --set parallel.cp=2
expect 0 "cp groups: [0,2] [1,3] [4,6] [5,7]" -- topology --world 8 --set parallel.tp=2 --set parallel.cp=2
expect 0 "dp x cp groups: [0,2,4,6] [1,3,5,7]" -- topology --world 8 --set parallel.tp=2 --set parallel.cp=2
expect 0 "model groups: [0,1] [2,3]" -- topology --world 8 --set parallel.tp=2 --set parallel.cp=2
expect 0 "order cp-tp-dp-pp" -- topology --world 8 --set parallel.tp=2 --set parallel.cp=2 --set parallel.order=cp-tp-dp-pp
expect 2 "world size 6 is not divisible by tp x cp x pp = 2 x 2 x 1 = 4" -- topology --world 6 --set parallel.tp=2 --set parallel.cp=2
expect 2 "train.seq_len = 12 is not a multiple of 8" -- topology --world 4 --set parallel.cp=4 --set train.seq_len=12
expect 2 "--world expects a positive integer" -- topology --world zero
expect 2 "key 'parallel.dp' expects integer or auto, got 'some'" -- topology --world 4 --set parallel.dp=some
echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
