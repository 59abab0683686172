#!/usr/bin/env bash
# `tessera schedule`: prints each built-in schedule's timeline, bubble fraction (against its
# closed form) and peak live activations; reads schedules from files; stops with exit code 2 and
# a message naming the numbers, the line or the ranks for bad arguments and bad schedule files.
# Usage: schedule_cli_test.sh PATH/TO/tessera
set -uo pipefail
TESSERA="$1"
failures=0
passes=0
expect() {  # expect CODE PATTERN -- ARGS...
  local code="$1" pattern="$2"; shift 3
  local out rc
  out=$("$TESSERA" "$@" 2>&1); rc=$?
  if [[ $rc -ne $code ]] || [[ "$out" != *"$pattern"* ]]; then
    echo "FAIL: tessera $* -> exit $rc (want $code), output:"; echo "$out" | head -12
    echo "      expected to contain: $pattern"
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# Built-in schedules, pp 4, 8 micro-batches: closed forms 3/11 (GPipe, 1F1B), 3/19 (interleaved,
# v 2), 1/9 (ZB-H1: p-1 idle per rank out of 3m+p-1).
expect 0 "closed form (p-1)/(m+p-1) = 3/11 = 0.272727 (matches)" -- schedule --pp 4 --microbatches 8 --schedule 1f1b
expect 0 "rank 3 |......F0B0--F1B1--F2B2--" -- schedule --pp 4 --microbatches 8 --schedule 1f1b
# 1F1B keeps pp - r micro-batches live on rank r, GPipe all 8.
expect 0 "   1       24        9  3" -- schedule --pp 4 --microbatches 8
expect 0 "   1       24        9  8" -- schedule --pp 4 --microbatches 8 --schedule gpipe
expect 0 "closed form (p-1)/(v*m+p-1) = 3/19 = 0.157895 (matches)" -- schedule --pp 4 --microbatches 8 --schedule interleaved --virtual-stages 2
expect 0 "lower case: chunk 1" -- schedule --pp 4 --microbatches 8 --schedule interleaved
expect 0 "closed form (p-1)/(3m+p-1) = 1/9 = 0.111111 (matches)" -- schedule --pp 4 --microbatches 8 --schedule zb-h1
expect 0 "rank 0 |F0F1F2F3......I0W0F4I1W1" -- schedule --pp 4 --microbatches 8 --schedule zb-h1
expect 0 "closed form (p-1)/(v*m+p-1) = 7/39 = 0.179487 (matches)" -- schedule --pp 8 --microbatches 8 --schedule interleaved --virtual-stages 4
# The action lists in the text form; explicit costs (no closed form then).
expect 0 "0RA0 0F0 0B0 0SG0 0RA1 0F1 0B1 0SG1" -- schedule --pp 4 --microbatches 8 --print-actions
expect 0 "costs per chunk: F 1, B 3, I 1, W 1, comm 0.5" -- schedule --pp 2 --microbatches 2 --costs B=3,comm=0.5

# Schedule files: a good one, one that deadlocks, one that does not parse.
cat > "$dir/good.txt" <<'EOF'
# 1F1B on two ranks, two micro-batches
0F0 0SA0 0F1 0SA1 0RG0 0B0 0RG1 0B1
0RA0 0F0 0B0 0SG0 0RA1 0F1 0B1 0SG1
EOF
expect 0 "bubble fraction 0.333333" -- schedule --file "$dir/good.txt"
expect 0 "schedule $dir/good.txt: pp 2, virtual stages 1, micro-batches 2" -- schedule --file "$dir/good.txt" --pp 2
cat > "$dir/deadlock.txt" <<'EOF'
# rank 1 receives both activations before computing; rank 0 sends the second only after B0
0F0 0SA0 0F1 0RG0 0B0 0SA1 0RG1 0B1
0RA0 0RA1 0F0 0F1 0B0 0SG0 0B1 0SG1
EOF
expect 2 "deadlock: rank 0 (line 2) action 4 '0RG0' waits for rank 1 (line 3) action 6 '0SG0'; rank 1 (line 3) action 2 '0RA1' waits for rank 0 (line 2) action 6 '0SA1'" -- schedule --file "$dir/deadlock.txt"
printf '0F0 0SA0 0RG0 0B0\n0RA0 0F0 0B0 0SGX\n' > "$dir/bad.txt"
expect 2 "bad.txt: line 2 (rank 1), token 4: bad action '0SGX'" -- schedule --file "$dir/bad.txt"
printf '0F0 0SA0 0RG0 0B0\n0F0 0B0 0SG0\n' > "$dir/unmatched.txt"
expect 2 "unmatched send: rank 0 (line 1) action 2 '0SA0' sends to rank 1" -- schedule --file "$dir/unmatched.txt"
expect 2 "--pp 4 but $dir/good.txt has 2" -- schedule --file "$dir/good.txt" --pp 4
expect 2 "cannot open" -- schedule --file "$dir/missing.txt"
expect 2 "give --schedule or --file, not both" -- schedule --file "$dir/good.txt" --schedule 1f1b

# Bad arguments.
expect 2 "--pp and --microbatches are required" -- schedule --pp 4
expect 2 "--pp expects a positive integer, got '0'" -- schedule --pp 0 --microbatches 8
expect 2 "--microbatches expects a positive integer, got 'many'" -- schedule --pp 4 --microbatches many
expect 2 "unknown schedule 'zb-h2' (expected one of gpipe, 1f1b, interleaved, zb-h1)" -- schedule --pp 4 --microbatches 8 --schedule zb-h2
expect 2 "micro-batches to be a multiple of pp: 6 % 4 = 2" -- schedule --pp 4 --microbatches 6 --schedule interleaved
expect 2 "schedule 1f1b runs one chunk per rank, got 2 virtual stages" -- schedule --pp 4 --microbatches 8 --virtual-stages 2
expect 2 "unknown option '--stages'" -- schedule --pp 4 --microbatches 8 --stages 2
expect 2 "--costs item 'X=1' must be KEY=VALUE" -- schedule --pp 4 --microbatches 8 --costs X=1
expect 2 "--pp needs a value" -- schedule --microbatches 8 --pp
expect 0 "schedule --pp P --microbatches M" -- help
echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
