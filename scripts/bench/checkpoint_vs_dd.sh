#!/usr/bin/env bash
# Checkpoint save and load throughput against `dd` on the same bytes and the same filesystem, in
# one run, alternating:
#   1. build/bench/checkpoint_bench (the writer and reader alone, fp32 tensors of 64 MB) at each
#      size of BENCH_SIZES_GB: a synchronous save (fsync, commit) through the page cache, the same
#      save with O_DIRECT shard writes (checkpoint.direct_io), `dd bs=4M conv=fsync` and
#      `dd bs=4M oflag=direct conv=fsync` writing as many bytes, in turn, then a load from disk (every file fsynced and its pages dropped with
#      posix_fadvise(DONTNEED) first) against dd reading the dd file back cold the same way;
#   2. `tessera train` of a Llama shape (~1 GB of fp32 parameters and AdamW moments): the
#      synchronous save, the resume from disk, and the training stall of an asynchronous save as
#      the writer logs it ("checkpoint: saved N GB in S s (stall T s)");
#   3. Python's torch.save of tensors of the same shapes + fsync.
#   scripts/bench/checkpoint_vs_dd.sh
# Env: BENCH_SIZES_GB (default "1 8"), BENCH_TRAIN (1; 0 stops after part 1), BENCH_DIM (768), BENCH_LAYERS (12), BENCH_DIR
# (build/checkpoint_bench). The model: Llama shape dim x layers, 12 heads / 4 kv, ffn 8/3 x dim,
# vocab 4224 (the sample data's). Each figure is the best of 3.
# The last lines are `size_gb=G tessera_save_gb_per_s=A dd_gb_per_s=B ratio=A/B ...` per size
# (the save: the faster of the two paths' best; the dd: the faster of the two dd's best).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
SIZES="${BENCH_SIZES_GB:-1 8}"
DIM="${BENCH_DIM:-768}"
LAYERS="${BENCH_LAYERS:-12}"
FFN=$(( (DIM * 8 / 3 + 63) / 64 * 64 ))
DIR="${BENCH_DIR:-$ROOT/build/checkpoint_bench}"
[[ -x build/tessera && -x build/bench/checkpoint_bench ]] || scripts/build.sh
scripts/make_sample_corpus.sh >/dev/null
scripts/prepare_sample_data.sh >/dev/null
DATA="$ROOT/.cache/sample_data"
rm -rf "$DIR"
mkdir -p "$DIR"

echo "[bench] $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
     "filesystem of $DIR: $(df -T "$DIR" | awk 'NR==2 {print $2}')"
echo "[bench] load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

train() {  # train RUN_DIR EXTRA... -> log on stdout
  build/tessera train --set model.dim="$DIM" --set model.n_layers="$LAYERS" --set model.n_heads=12 \
    --set model.n_kv_heads=4 --set model.ffn_dim="$FFN" --set model.vocab_size=4224 --set train.seq_len=64 \
    --set train.micro_batch=1 --set train.global_batch=1 --set train.eval_every=0 --set train.log_every=1 \
    --set "data.train=$DATA/text" --set checkpoint.keep=0 --set "train.run_dir=$1" "${@:2}" 2>&1 | tr -d '\000'
}

best() { sort -g | head -1; }
# Loads are timed from disk, not from the page cache the save just filled: every file of the
# checkpoint is fsynced and its cached pages dropped with posix_fadvise(DONTNEED) first (no root
# needed, unlike /proc/sys/vm/drop_caches). fincore, where util-linux has it, reports what stayed
# resident. On a virtual machine the host may still cache the disk image: that is the disk here.
drop_pages() {  # drop_pages FILE... -> prints the bytes still resident afterwards
  "$PY" - "$@" <<'PYEOF'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PYEOF
  if command -v fincore >/dev/null; then
    fincore --bytes --noheadings --output RES "$@" | awk '{s += $1} END {print s + 0}'
  else
    echo "unknown (no fincore)"
  fi
}
rate_of() { "$PY" -c "print('%.3f' % ($1 / 1e9 / $2))"; }  # rate_of BYTES SECONDS -> GB/s
elapsed() { "$PY" -c "print($2 - $1)"; }
summary=()
for gb in $SIZES; do
  c_save=() c_direct=() c_load=() d_write=() d_direct=() d_read=()
  for i in 1 2 3; do
    rm -rf "$DIR/ckpt"
    out=$(build/bench/checkpoint_bench save_direct "$DIR/ckpt" "$gb")
    c_direct+=("$(sed 's/.*seconds=//' <<<"$out")")
    bytes=$(sed 's/.*bytes=\([0-9]*\).*/\1/' <<<"$out")
    count=$(( (bytes + 4194303) / 4194304 ))
    start=$(date +%s.%N)
    dd if=/dev/zero of="$DIR/dd.bin" bs=4M count="$count" oflag=direct conv=fsync status=none
    d_direct+=("$(elapsed "$start" "$(date +%s.%N)")")
    rm -rf "$DIR/ckpt" "$DIR/dd.bin"
    out=$(build/bench/checkpoint_bench save "$DIR/ckpt" "$gb")
    c_save+=("$(sed 's/.*seconds=//' <<<"$out")")
    start=$(date +%s.%N)
    dd if=/dev/zero of="$DIR/dd.bin" bs=4M count="$count" conv=fsync status=none
    d_write+=("$(elapsed "$start" "$(date +%s.%N)")")
    resident=$(drop_pages "$DIR"/ckpt/step-*/* "$DIR/dd.bin")
    out=$(build/bench/checkpoint_bench load "$DIR/ckpt")
    c_load+=("$(sed 's/.*seconds=//' <<<"$out")")
    start=$(date +%s.%N)
    dd if="$DIR/dd.bin" of=/dev/null bs=4M status=none
    d_read+=("$(elapsed "$start" "$(date +%s.%N)")")
    rm -f "$DIR/dd.bin"
    echo "[bench] $gb GB round $i: save (O_DIRECT) ${c_direct[-1]} s, dd oflag=direct ${d_direct[-1]} s," \
         "save (page cache) ${c_save[-1]} s, dd conv=fsync ${d_write[-1]} s, load ${c_load[-1]} s," \
         "dd read ${d_read[-1]} s (bytes resident after the drop: $resident)"
  done
  rm -rf "$DIR/ckpt"
  s=$(printf '%s\n' "${c_save[@]}" | sort -g | head -1); w=$(printf '%s\n' "${d_write[@]}" | sort -g | head -1)
  sd=$(printf '%s\n' "${c_direct[@]}" | sort -g | head -1); wd=$(printf '%s\n' "${d_direct[@]}" | sort -g | head -1)
  l=$(printf '%s\n' "${c_load[@]}" | sort -g | head -1); r=$(printf '%s\n' "${d_read[@]}" | sort -g | head -1)
  echo "[bench] $gb GB ($bytes bytes): tessera save (page cache) $(rate_of "$bytes" "$s") GB/s ($s s)," \
       "tessera save (O_DIRECT) $(rate_of "$bytes" "$sd") GB/s ($sd s), dd conv=fsync" \
       "$(rate_of "$bytes" "$w") GB/s ($w s), dd oflag=direct $(rate_of "$bytes" "$wd") GB/s ($wd s); tessera load (cold) $(rate_of "$bytes" "$l") GB/s ($l s)," \
       "dd read (cold) $(rate_of "$bytes" "$r") GB/s ($r s)"
  best_save=$(printf '%s\n' "$s" "$sd" | sort -g | head -1); best_dd=$(printf '%s\n' "$w" "$wd" | sort -g | head -1)
  summary+=("size_gb=$gb tessera_save_gb_per_s=$(rate_of "$bytes" "$best_save") dd_gb_per_s=$(rate_of "$bytes" "$best_dd")"\
" ratio=$("$PY" -c "print('%.2f' % ($best_dd / $best_save))") tessera_load_gb_per_s=$(rate_of "$bytes" "$l")"\
" dd_read_gb_per_s=$(rate_of "$bytes" "$r")")
done

if [[ "${BENCH_TRAIN:-1}" == 0 ]]; then printf '%s\n' "${summary[@]}"; exit 0; fi

resident_after_drop=()
save_s=() load_s=() async_stall=() bytes=0
for i in 1 2 3; do
  run="$DIR/sync$i"
  log=$(train "$run" --set train.steps=1)
  line=$(grep -a "checkpoint: saved" <<<"$log" | tail -1)
  gb=$(sed 's/.*saved \([0-9.]*\) GB in.*/\1/' <<<"$line")
  bytes=$("$PY" -c "print(int(float('$gb') * 1e9))")
  save_s+=("$(sed 's/.* GB in \([0-9.]*\) s.*/\1/' <<<"$line")")
  resident_after_drop+=("$(drop_pages "$run"/checkpoints/step-*/*)")
  log=$(train "$DIR/load$i" --set train.steps=1 --set checkpoint.at_end=false --set "checkpoint.resume=$run/checkpoints")
  load_s+=("$(grep -a -o 'loaded in [0-9.]* s' <<<"$log" | sed 's/loaded in \([0-9.]*\) s/\1/')")
  log=$(train "$DIR/async$i" --set train.steps=2 --set checkpoint.every=1 --set checkpoint.async=true \
        --set checkpoint.at_end=false)
  async_stall+=("$(grep -a "checkpoint: saved" <<<"$log" | head -1 | sed 's/.*(stall \([0-9.]*\) s).*/\1/')")
done
save=$(printf '%s\n' "${save_s[@]}" | best)
load=$(printf '%s\n' "${load_s[@]}" | best)
stall=$(printf '%s\n' "${async_stall[@]}" | best)

dd_s=()
count=$(( (bytes + 4194303) / 4194304 ))
for i in 1 2 3; do
  start=$(date +%s.%N)
  dd if=/dev/zero of="$DIR/dd.bin" bs=4M count="$count" conv=fsync status=none
  end=$(date +%s.%N)
  dd_s+=("$("$PY" -c "print($end - $start)")")
  rm -f "$DIR/dd.bin"
done
dd_best=$(printf '%s\n' "${dd_s[@]}" | best)
# The load's peer: dd reading the same number of bytes back from disk (pages dropped the same way).
dd_read_s=()
dd if=/dev/urandom of="$DIR/dd.bin" bs=4M count="$count" conv=fsync status=none
for i in 1 2 3; do
  drop_pages "$DIR/dd.bin" >/dev/null
  start=$(date +%s.%N)
  dd if="$DIR/dd.bin" of=/dev/null bs=4M status=none
  end=$(date +%s.%N)
  dd_read_s+=("$("$PY" -c "print($end - $start)")")
done
rm -f "$DIR/dd.bin"
dd_read_best=$(printf '%s\n' "${dd_read_s[@]}" | best)

torch_s=$("$PY" - "$DIM" "$LAYERS" "$FFN" "$DIR" <<'PYEOF'
import os, sys, time, torch
dim, layers, ffn, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
hd, heads, kv, vocab = dim // 12, 12, 4, 4224
shapes = [(vocab, dim), (dim,)]
for _ in range(layers):
    shapes += [(heads * hd, dim), (kv * hd, dim), (kv * hd, dim), (dim, heads * hd), (ffn, dim), (ffn, dim),
               (dim, ffn), (dim,), (dim,)]
state = {}
for i, s in enumerate(shapes):  # parameters and the two AdamW moments, fp32
    for kind in ("param", "exp_avg", "exp_avg_sq"):
        state[f"{kind}.{i}"] = torch.randn(s)
best = None
for _ in range(3):
    path = os.path.join(out, "torch_save.pt")
    start = time.time()
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    took = time.time() - start
    best = took if best is None else min(best, took)
    os.remove(path)
print(best)
PYEOF
)
gb=$("$PY" -c "print($bytes / 1e9)")
rate() { "$PY" -c "print('%.3f' % ($gb / $1))"; }
echo "[bench] checkpoint bytes: $bytes (parameters + AdamW moments, fp32; one rank)"
echo "[bench] tessera save (sync):   $(rate "$save") GB/s ($save s)"
echo "[bench] tessera load (resume): $(rate "$load") GB/s ($load s), from disk: pages dropped first" \
     "(bytes still resident after each drop: ${resident_after_drop[*]})"
echo "[bench] dd read from disk:     $(rate "$dd_read_best") GB/s ($dd_read_best s)"
echo "[bench] tessera async save: training stalled $stall s (Save's call and the wait for its snapshot before the next update) of a $save s synchronous save"
echo "[bench] dd conv=fsync:         $(rate "$dd_best") GB/s ($dd_best s)"
echo "[bench] torch.save + fsync:    $(rate "$torch_s") GB/s ($torch_s s)"
ratio=$("$PY" -c "print('%.2f' % ($dd_best / $save))")
echo "tessera_save_gb_per_s=$(rate "$save") dd_gb_per_s=$(rate "$dd_best") ratio=$ratio"
printf '%s\n' "${summary[@]}"
