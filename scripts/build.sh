#!/usr/bin/env bash
# Configures (once) and builds Tessera into build/ with Ninja, ccache and precompiled LibTorch
# headers. Runs scripts/setup.sh first if the project's virtualenv or packages are missing.
# Usage: scripts/build.sh [extra cmake -D options...]    BUILD_DIR=... to build elsewhere.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

if [[ ! -x "$ROOT/.venv/bin/python" ]] || ! command -v ccache >/dev/null || ! command -v mpirun >/dev/null \
   || ! command -v clang++ >/dev/null \
   || ! dpkg-query -W libyaml-cpp-dev catch2 libabsl-dev libclang-rt-dev >/dev/null 2>&1; then
  "$ROOT/scripts/setup.sh"
fi

# ccache's cache lives outside the tree (~/.cache/ccache), keyed on paths relative to the
# checkout, so fresh clones anywhere on the machine reuse it.
export CCACHE_BASEDIR="$ROOT"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_NOHASHDIR=1
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-8G}"

if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  echo "[build] configuring $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache "$@"
fi
echo "[build] building with $(nproc) jobs"
start=$SECONDS
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "[build] done in $((SECONDS - start)) s"
