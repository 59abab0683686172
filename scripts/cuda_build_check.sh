#!/usr/bin/env bash
# Compiles Tessera's CUDA-only code against a CUDA build of LibTorch, with warnings as errors, on
# a machine without a GPU: the CUDA kernels (nvcc), every source whose code depends on LibTorch
# having CUDA (#if TESSERA_KERNELS_CUDA / TESSERA_TORCH_HAS_CUDA), the NCCL backend that only a
# CUDA LibTorch enables, and the GPU test programs (gpu_tests, gpu_comm_tests, nccl_core_smoke).
# The main build (scripts/build.sh) uses the CPU LibTorch, where none of these lines is compiled:
# without this check they would first meet a compiler on a GPU machine.
#
# What it does not do, and why: it does not link (the CUDA libraries LibTorch links against,
# cuBLAS, cuDNN and the rest, are gigabytes of wheels) and it does not recompile the sources that
# are the same under both builds (another ~130 files, ~15 minutes on 2 cores, that the CPU build
# already compiles with the same flags).
#
#   scripts/cuda_build_check.sh            skipped (exit 0, with a message) where no nvcc exists
#
# The CUDA LibTorch (torch==2.14.1 with NVRTC, the one library its CMake files require) goes into
# a virtualenv outside the tree, TESSERA_CUDA_TORCH_VENV (default ~/.cache/tessera/venv-cuda-torch,
# ~1.3 GB, installed once from pip's configured sources; fresh clones reuse it), the build into
# build-cuda/ (ccache shared with the main build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${CUDA_CHECK_BUILD_DIR:-$ROOT/build-cuda}"
VENV="${TESSERA_CUDA_TORCH_VENV:-$HOME/.cache/tessera/venv-cuda-torch}"
TORCH_VERSION="${TESSERA_CUDA_TORCH_VERSION:-2.14.1}"
log() { echo "[cuda_build_check] $*"; }

NVCC="$(command -v nvcc || true)"
[[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
if [[ -z "$NVCC" ]]; then
  log "skipped: no nvcc on this machine (CUDA code compiles only where the CUDA toolkit is)"
  exit 0
fi
start=$SECONDS

# The CUDA LibTorch: the torch wheel alone (--no-deps: its CUDA libraries are not needed to
# compile, and without them `import torch` fails, so nothing here imports it: the version and
# the CMake files are read from the package's files) and NVRTC, which Caffe2's CMake files name.
site() { ls -d "$VENV"/lib/python3*/site-packages 2>/dev/null | head -1; }
torch_field() {  # torch_field NAME -> the value of NAME in torch/version.py ("" when absent)
  local f; f="$(site)/torch/version.py"
  [[ -f $f ]] && sed -nE "s/^$1[^=]*= '([^']*)'.*/\\1/p" "$f" | head -1
}
if [[ "$(torch_field __version__)" != "$TORCH_VERSION"+* || -z "$(torch_field cuda)" ]] \
   || ! ls "$(site)"/nvidia/*/lib/libnvrtc.so* >/dev/null 2>&1; then
  log "installing torch==$TORCH_VERSION (a CUDA build) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --no-deps "torch==$TORCH_VERSION" 2>&1 | grep -v '^WARNING: Location' || true
  cuda_major="$(torch_field cuda | cut -d. -f1)"
  [[ -n "$cuda_major" ]] || { log "FAILED: torch==$TORCH_VERSION installed without CUDA (a CPU build?)"; exit 1; }
  "$VENV/bin/pip" install -q --no-deps "nvidia-cuda-nvrtc==${cuda_major}.*" 2>&1 | grep -v '^WARNING: Location' || true
fi
TORCH_DIR="$(site)/torch/share/cmake/Torch"
[[ -f "$TORCH_DIR/TorchConfig.cmake" ]] || { log "FAILED: no TorchConfig.cmake in $TORCH_DIR"; exit 1; }
log "torch $(torch_field __version__) (CUDA $(torch_field cuda)), nvcc $("$NVCC" --version | grep -oE 'release [0-9.]+' | cut -d' ' -f2), $(du -sh "$VENV" | cut -f1) in $VENV"

export CCACHE_BASEDIR="$ROOT"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_NOHASHDIR=1
# Configured every time (seconds once the cache exists): the object list below is read from the
# generated build, which must know the sources added since the last run.
mkdir -p "$BUILD_DIR"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_WERROR=ON \
  -DTorch_DIR="$TORCH_DIR" -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="80;90" \
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
  -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache >"$BUILD_DIR/cuda_check.configure.log" 2>&1 \
  || { tail -30 "$BUILD_DIR/cuda_check.configure.log"; log "FAILED: cmake (log: $BUILD_DIR/cuda_check.configure.log)"; exit 1; }
summary="$(grep -hoE 'Tessera: CUDA compiler [A-Z]+, torch with CUDA [A-Z]+|Tessera: NCCL .*' "$BUILD_DIR/cuda_check.configure.log" | tr '\n' ';')"
log "${summary%;}"
if ! grep -q 'torch with CUDA ON' "$BUILD_DIR/cuda_check.configure.log" || ! grep -q 'CUDA compiler ON' "$BUILD_DIR/cuda_check.configure.log"; then
  log "FAILED: CMake did not take the CUDA LibTorch and nvcc (log: $BUILD_DIR/cuda_check.configure.log)"
  exit 1
fi

# The objects to compile: the .cu files, the GPU programs' sources, and every source that tests
# one of the CUDA build's macros (found by name, so a new such file is covered without a list).
mapfile -t cuda_sources < <(git ls-files '*.cc' '*.cu' | xargs grep -lE '^#if (TESSERA_KERNELS_CUDA|TESSERA_TORCH_HAS_CUDA)' || true)
mapfile -t objects < <(ninja -C "$BUILD_DIR" -t targets all | grep -oE '^[^:]+\.(cc|cu)\.o' | sort -u)
selected=()
for o in "${objects[@]}"; do
  # kernels/CMakeFiles/tessera_kernels.dir/rotary.cc.o -> kernels/rotary.cc
  src="$(sed -E 's#CMakeFiles/[^/]+\.dir/##; s#__/#../#g; s#\.o$##' <<<"$o")"
  src="$(realpath -m --relative-to="$ROOT" "$ROOT/$src")"
  if [[ $o == *.cu.o || $o == */gpu_tests.dir/* || $o == */gpu_comm_tests.dir/* || $o == */nccl_core_smoke.dir/* ]] \
     || printf '%s\n' "${cuda_sources[@]}" | grep -qxF "$src"; then
    selected+=("$o")
  fi
done
((${#selected[@]})) || { log "FAILED: no CUDA objects found in $BUILD_DIR"; exit 1; }
log "compiling ${#selected[@]} objects with warnings as errors: $(printf '%s\n' "${selected[@]}" | sed -E 's#.*/##; s#\.o$##' | tr '\n' ' ')"
if ! ninja -C "$BUILD_DIR" -j "$(nproc)" "${selected[@]}" >"$BUILD_DIR/cuda_check.build.log" 2>&1; then
  grep -E 'FAILED:|error|warning' "$BUILD_DIR/cuda_check.build.log" | head -40
  log "FAILED: the CUDA build does not compile (log: $BUILD_DIR/cuda_check.build.log)"
  exit 1
fi
log "ok: ${#selected[@]} objects compiled against torch $TORCH_VERSION with CUDA in $((SECONDS - start)) s"
