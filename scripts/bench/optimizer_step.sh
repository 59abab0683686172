#!/usr/bin/env bash
# The AdamW optimizer step alone on this machine's CPUs, at the ~100M shape of vs_hf.sh
# (100,882,176 fp32 parameters), four ways in one script run:
#   old      the separate LibTorch tensor ops per flat range that Tessera ran before its fused
#            CPU loop (bench/optimizer_step_bench.cc reimplements them as the fixed baseline)
#   new      tessera::FlatAdamW::Step over the ranges the data-parallel reducer lays out
#   fused    torch.optim.AdamW(fused=True).step() over the model's tensors (the peer; vs_hf.sh's)
#   foreach  torch.optim.AdamW(foreach=True).step(), for reference
# old and new alternate step by step in one C++ process, fused and foreach in one Python process
# (scripts/bench/optimizer_step_peer.py); the two processes alternate round by round, and the
# side that goes first inside a process flips every round, so that this VM's swings of +-20%
# from one minute to the next fall on every side. Each side's figure is the median over all its
# timed steps. The C++ sides apply a clipping factor (BENCH_GRAD_SCALE, default 0.5) inside the
# step, as the trainer does; the peer's clipping is a separate pass before its step (HF's
# clip_grad_norm_) and is not timed.
#
# Bytes moved per parameter (fp32, 4 B per read or write of one element), the basis of GB/s:
#   old      88 = grads*scale 8 + decay 8 + lerp_ 12 + mul_ 8 + addcmul_ 12 + sqrt 8 + div 8 + add_ 8
#                 + addcdiv_ 16  (80 with BENCH_GRAD_SCALE=1: no scaled copy)
#   new      28 = read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq
#   fused    28, the same single pass
#   foreach  80 = old without the scaled copy (torch/optim/adam.py _multi_tensor_adam)
# The decay pass covers the decayed parameters only (99.6% of them here); counted as all.
# Also printed: x.add_(y) over parameter-sized buffers (12 B per element, read in place like
# AdamW's buffers), the streaming bandwidth these threads reach, against which a memory-bound
# step can be held ("of stream" below), and the load average at the start of every process.
#
# Env: BENCH_THREADS   threads for every side (default: nproc)
#      BENCH_REPEATS   rounds of (C++ process, Python process) (default 3)
#      BENCH_STEPS     timed steps of each side per round (default 4); N = REPEATS x STEPS
#      BENCH_WARMUP    untimed steps of each side at the start of each process (default 1)
#      BENCH_GRAD_SCALE  the clipping factor the C++ sides apply (default 0.5)
#      BENCH_SKIP_BUILD=1  use the existing build; BUILD_DIR (default build/)
# The defaults take about a minute on 2 quiet cores (up to 2-3 on a busy machine). Last line:
#   optimizer_step params=P threads=T new_ms=... old_ms=... fused_ms=... foreach_ms=... new_vs_old=R new_vs_fused=R
# where a ratio is the speed of new over the other's (its ms over new's ms; > 1: new is faster).
# Run from anywhere: bash scripts/bench/optimizer_step.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
THREADS="${BENCH_THREADS:-$(nproc)}"
REPEATS="${BENCH_REPEATS:-3}"
STEPS="${BENCH_STEPS:-4}"
WARMUP="${BENCH_WARMUP:-1}"
GRAD_SCALE="${BENCH_GRAD_SCALE:-0.5}"
SKIP_BUILD="${BENCH_SKIP_BUILD:-0}"
PY="$ROOT/.venv/bin/python"
BENCH="$BUILD_DIR/bench/optimizer_step_bench"
OUT="$BUILD_DIR/optimizer_step"
T_START=$SECONDS

log() { printf '[optimizer_step %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }
die() { printf '[optimizer_step] ERROR: %s\n' "$*" >&2; exit 1; }
# The 1-minute load average lags (it still counts this script's previous process); the threads
# running at this instant show another program at once (this script's own, 1 or 2, included).
machine_load() { awk '{ split($4, r, "/"); printf "load average %s, threads running now %d", $1, r[1] }' /proc/loadavg; }
for v in THREADS REPEATS STEPS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v='${!v}': expected a positive integer"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP='$WARMUP': expected a non-negative integer"

# ---- 1. environment and build ------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  log "no .venv: running scripts/setup.sh"
  bash "$ROOT/scripts/setup.sh"
fi
if [[ $SKIP_BUILD == 1 ]]; then
  log "BENCH_SKIP_BUILD=1: using the existing ${BENCH#$ROOT/}"
else
  # The configuration of scripts/build.sh, but only this target: the whole tree takes far longer.
  export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-8G}"
  export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    log "configuring ${BUILD_DIR#$ROOT/} as scripts/build.sh does"
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_C_COMPILER_LAUNCHER=ccache \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache >/dev/null
  fi
  log "building optimizer_step_bench"
  cmake --build "$BUILD_DIR" --target optimizer_step_bench -j "$(nproc)" >/dev/null || die "the build failed"
fi
[[ -x "$BENCH" ]] || die "${BENCH#$ROOT/} is missing (build it, or unset BENCH_SKIP_BUILD)"

# ---- 2. rounds ---------------------------------------------------------------------------------
export OMP_NUM_THREADS="$THREADS"
rm -rf "$OUT"; mkdir -p "$OUT"
read -r load1 _ </proc/loadavg
log "threads=$THREADS rounds=$REPEATS steps=$STEPS warmup=$WARMUP grad_scale=$GRAD_SCALE; load average $load1"
if "$PY" -c "import sys; sys.exit(0 if float('$load1') > 0.5 else 1)"; then
  log "WARNING: the machine is busy (load $load1): other processes share these $(nproc) cores"
fi
for ((round = 1; round <= REPEATS; round++)); do
  if ((round % 2)); then first_cc=old first_py=fused; else first_cc=new first_py=foreach; fi
  log "round $round of $REPEATS: Tessera (old and new, $first_cc first); $(machine_load)"
  "$BENCH" --threads="$THREADS" --warmup="$WARMUP" --steps="$STEPS" --first="$first_cc" \
    --grad-scale="$GRAD_SCALE" 2>&1 | tee "$OUT/tessera.$round.log" | sed -u 's/^/    [tessera] /' \
    || die "optimizer_step_bench failed (log: $OUT/tessera.$round.log)"
  log "round $round of $REPEATS: PyTorch (fused and foreach, $first_py first); $(machine_load)"
  "$PY" "$ROOT/scripts/bench/optimizer_step_peer.py" --threads="$THREADS" --warmup="$WARMUP" \
    --steps="$STEPS" --first="$first_py" 2>&1 | tee "$OUT/peer.$round.log" | sed -u 's/^/    [torch] /' \
    || die "optimizer_step_peer.py failed (log: $OUT/peer.$round.log)"
done
read -r load1 _ </proc/loadavg
log "load average $load1 after the runs"

# ---- 3. report ---------------------------------------------------------------------------------
echo
"$PY" - "$OUT" "$THREADS" "$GRAD_SCALE" <<'EOF'
import glob, re, statistics, sys
out, threads, grad_scale = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
times, params, streams, check = {}, {}, [], None
for path in sorted(glob.glob(f"{out}/*.log")):
    for line in open(path):
        if m := re.match(r"step side=(\w+) ms=([\d.]+)", line):
            times.setdefault(m[1], []).append(float(m[2]))
        elif m := re.match(r"(bench|peer) params=(\d+)", line):
            params[m[1]] = int(m[2])
        elif m := re.match(r"stream gb_per_s=([\d.]+)", line):
            streams.append(float(m[1]))
        elif m := re.match(r"check old_vs_new_max_abs_diff=(\S+)", line):
            check = m[1]
if set(times) != {"old", "new", "fused", "foreach"} or len(params) != 2:
    sys.exit(f"[optimizer_step] ERROR: incomplete logs in {out}: sides {sorted(times)}, params {params}")
if params["bench"] != params["peer"]:
    print(f"WARNING: parameter counts differ: Tessera {params['bench']}, PyTorch {params['peer']}")
n = params["bench"]
bytes_per = {"old": 88 if grad_scale != 1 else 80, "new": 28, "fused": 28, "foreach": 80}
what = {"old": "Tessera before: LibTorch tensor ops per range", "new": "Tessera FlatAdamW::Step",
        "fused": "torch.optim.AdamW(fused=True)", "foreach": "torch.optim.AdamW(foreach=True)"}
med = {s: statistics.median(v) for s, v in times.items()}
stream = statistics.median(streams)
print(f"AdamW step over {n:,} fp32 parameters, {threads} threads; median over N timed steps per side")
print(f"stream (x.add_(y), 12 B/element): median {stream:.2f} GB/s over {len(streams)} rounds")
print(f"{'side':8} {'N':>3} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'B/param':>8} {'GB/s':>7} {'of stream':>9}  what")
for s in ("old", "new", "fused", "foreach"):
    gbs = bytes_per[s] * n / (med[s] / 1e3) / 1e9
    print(f"{s:8} {len(times[s]):3d} {med[s]:10.1f} {min(times[s]):9.1f} {max(times[s]):9.1f} "
          f"{bytes_per[s]:8d} {gbs:7.2f} {gbs / stream:9.0%}  {what[s]}")
r_old, r_fused, r_foreach = med["old"] / med["new"], med["fused"] / med["new"], med["foreach"] / med["new"]
print(f"new vs old: {r_old:.2f}x   new vs fused: {r_fused:.2f}x   new vs foreach: {r_foreach:.2f}x   "
      f"(speed of new over the other's; > 1: new is faster)")
print(f"check: old and new after 3 identical steps of a small case differ by at most {check}")
print(f"optimizer_step params={n} threads={threads} new_ms={med['new']:.1f} old_ms={med['old']:.1f} "
      f"fused_ms={med['fused']:.1f} foreach_ms={med['foreach']:.1f} new_vs_old={r_old:.2f} new_vs_fused={r_fused:.2f}")
EOF
log "logs in ${OUT#$ROOT/}; total time $((SECONDS - T_START)) s"
