#!/usr/bin/env bash
# Runs the kernel, optimizer and model tests (torch_tests, filtered by file) on one of the CPU
# paths that Tessera and LibTorch otherwise pick by instruction set, forced through the
# environment, so that every path a user's CPU may take is tested on this machine:
#   baseline  Tessera's baseline loops, ATen's DEFAULT kernels, MKL up to SSE4.2, oneDNN up to SSE4.1
#   avx2      Tessera's AVX2 loops, ATen's AVX2 kernels, MKL and oneDNN up to AVX2
# (The native path, AVX-512 / AVX512-BF16 / AMX where the CPU has them, is every other test.)
# Usage: cpu_path_test.sh TORCH_TESTS_BINARY baseline|avx2. Exit 77 (skipped) when the CPU lacks
# the path's instruction set.
set -euo pipefail
binary=$1 path=$2
case "$path" in
  baseline) env_vars=(TESSERA_CPU_LOOPS=baseline ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2
                      ONEDNN_MAX_CPU_ISA=SSE41) ;;
  avx2)
    if ! grep -qw avx2 /proc/cpuinfo; then
      echo "this CPU has no AVX2: the avx2 path cannot run here"
      exit 77
    fi
    env_vars=(TESSERA_CPU_LOOPS=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2) ;;
  *) echo "cpu_path_test.sh: unknown path '$path' (expected baseline or avx2)" >&2; exit 2 ;;
esac
files="[#add_rms_norm_test],[#cpu_loops_test],[#linear_test],[#rms_norm_test],[#rotary_test]"
files+=",[#sum_squares_test],[#swiglu_test],[#weight_grad_test],[#flat_adamw_test],[#model_test]"
echo "path $path: ${env_vars[*]}"
exec env "${env_vars[@]}" "$binary" -# "$files"
