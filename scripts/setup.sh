#!/usr/bin/env bash
# Installs everything Tessera needs to build and test, idempotently, on Debian 12 or 13:
# Debian packages (compiler tools, OpenMPI, Abseil, Protobuf, yaml-cpp, Catch2, ccache, gnuplot
# for `tessera plot`, Slurm and munge for the one-node cluster of tests/slurm) and a
# project virtualenv .venv holding LibTorch (pip package torch) and the Python test peers.
# Safe to run again: each step checks whether it is already done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${TESSERA_TORCH_VERSION:-2.13.0}"

log() { echo "[setup] $*"; }

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libopenmpi-dev openmpi-bin
  libabsl-dev libprotobuf-dev protobuf-compiler
  libyaml-cpp-dev catch2 libpcre2-dev
  gnuplot-nox
  clang libclang-rt-dev
  slurm-wlm munge
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

VENV="$ROOT/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION into .venv (LibTorch for the C++ build)"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" numpy pyyaml tiktoken
else
  log "torch $TORCH_VERSION present in .venv"
fi
# numpy and pyyaml are used by tests that parse outputs independently of the C++ code, tiktoken
# by the tokenizer parity test and benchmark (pinned torch: installing them never changes it).
"$VENV/bin/python" -c "import numpy, yaml, tiktoken" 2>/dev/null ||
  "$VENV/bin/pip" install -q numpy pyyaml tiktoken "torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
# NCCL's header and library (the pip package nvidia-nccl-cu13, site-packages/nvidia/nccl), so
# that the NCCL backend compiles wherever the CUDA toolkit exists, also with a CPU LibTorch;
# CMake looks for it there. Only where a CUDA toolkit is installed.
if [[ -x /usr/local/cuda/bin/nvcc || -n "${CUDA_HOME:-}" ]] && \
   ! compgen -G "$VENV/lib/python3*/site-packages/nvidia/nccl/include/nccl.h" >/dev/null; then
  log "installing nvidia-nccl-cu13 into .venv (NCCL headers for the NCCL backend)"
  "$VENV/bin/pip" install -q nvidia-nccl-cu13 || log "WARNING: nvidia-nccl-cu13 did not install: the NCCL backend will not be compiled"
fi
log "done"
