#!/usr/bin/env bash
# The GPU machine's one command: builds Tessera there against that machine's CUDA torch and runs
# everything that needs a GPU, in phases that are each timed and limited, so that one failing
# phase is reported and the others still run; a short table comes last.
#
#   facts      machine, OS, glibc, compilers, CUDA, python/torch/transformers, GPU (nvidia-smi)
#   deps       Abseil, yaml-cpp, PCRE2, Catch2, Protobuf (and pkgconf) from .deps (scripts/fetch_device_deps.sh,
#              run beforehand on the Debian 12 machine and carried along): the Debian 12 libraries
#              when they load here (they need glibc >= 2.34 and GLIBCXX_3.4.29), else Abseil,
#              yaml-cpp and PCRE2 built from the upstream tarballs in .deps/src with this machine's
#              compiler
#   configure  cmake into build-gpu/ with python3's torch (TESSERA_PYTHON), CUDA arch 90, the
#              .deps prefix
#   build_gpu  ninja -j$(nproc), only what the GPU phases run (tessera, gpu_tests, gpu_comm_tests,
#              nccl_core_smoke); then the CUDA kernels' registers and spills
#   gpu_tests  ctest -L gpu (tests/gpu: the CUDA kernels, attention, training on CUDA)
#   bench      scripts/bench/gpu_vs_hf.sh: Tessera vs Hugging Face transformers, Llama-3.2-1B
#              shape, seq 4096, bf16; Tessera also without its CUDA kernels; one untimed step
#              profiled on both sides
#   nccl       tests/parallel/comm/nccl_device_check.sh: NCCL communicator tests on CUDA, world 1, then one rank per GPU
#   build      every other target
#   tests      the rest of the ctest suite (ctest -LE gpu)
#   sanitize   compute-sanitizer memcheck and racecheck on the CUDA RMSNorm test, if time is left
#
# Time: the build is most of it. Compiling all 228 objects of a cold build takes ~13 s each on
# this project's 2-core development machine (ninja's log, cache misses, 2026-12-04): ~50 min of
# one core, so ~3 to 4 min on 16 cores with the precompiled header built first; build_gpu
# compiles almost all of them (the libraries are most of the work). With the GPU tests (~1 min),
# the benchmark (3 runs, ~3 min) and NCCL (~1 min), a full pass is planned for under 8 minutes.
#
# Usage, from the repository root on the GPU machine:  bash scripts/device_check.sh
# The whole run stays within DEVICE_CHECK_BUDGET_S (default 470 s); a phase that would start with
# too little time left is skipped and says so. Everything printed also goes to
# $OUT/device_check.log when OUT is set (else BUILD_DIR/device_check/), with the configure and
# build logs, the ctest logs, and the benchmark's log, results.json and Tessera metrics.
#
# Options and environment:
#   --dry-run                  for a machine without a GPU: no nvidia-smi, phases "facts deps
#                              configure" by default, build dir /tmp/tessera-device-check-dry
#   TESSERA_PYTHON             the python with torch; default: the first that imports it of
#                              python3, python, /opt/*/{.venv,venv}/bin, /opt/conda, /opt/*/bin,
#                              /usr/local/bin and .venv (printed first)
#   DEVICE_CHECK_PHASES        the phases to run, in order (default: all of the above)
#   DEVICE_CHECK_BUILD_DIR     default build-gpu
#   DEVICE_CHECK_BUDGET_S      default 470
#   DEVICE_CHECK_DEPS=auto|debian|source   force the Debian libraries or the source build
#   DEVICE_CHECK_TORCH_DIR     -DTorch_DIR=... instead of asking TESSERA_PYTHON
#   DEVICE_CHECK_BUILD_TYPE    default Release (no debug information: a third less compile time)
#   DEVICE_CHECK_CMAKE_ARGS    extra cmake arguments
#   DEVICE_CHECK_JOBS          build jobs (default nproc); DEVICE_CHECK_TEST_JOBS (default 4)
#   BENCH_*                    passed to scripts/bench/gpu_vs_hf.sh (e.g. BENCH_SHAPE=tiny)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN=0
for a in "$@"; do
  case "$a" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done

if ((DRY_RUN)); then
  PHASES="${DEVICE_CHECK_PHASES:-facts deps configure}"
  BUILD_DIR="${DEVICE_CHECK_BUILD_DIR:-/tmp/tessera-device-check-dry}"
else
  PHASES="${DEVICE_CHECK_PHASES:-facts deps configure build_gpu gpu_tests bench nccl build tests sanitize}"
  BUILD_DIR="${DEVICE_CHECK_BUILD_DIR:-$ROOT/build-gpu}"
fi

# The python whose torch the build uses: TESSERA_PYTHON when set, else the first that imports
# torch of python3 and python on PATH, the virtualenvs and installs under /opt (a GPU image's
# usual place: /opt/*/.venv, /opt/*/venv, /opt/conda, /opt/*/bin), /usr/local/bin, and this
# checkout's .venv (a CPU torch: enough for --dry-run). A GPU machine's python3 is often not the
# one with torch, so the choice and how it was made are printed first.
find_torch_python() {
  local c
  for c in python3 python /opt/*/.venv/bin/python3 /opt/*/venv/bin/python3 /opt/conda/bin/python3 \
           /opt/*/bin/python3 /usr/local/bin/python3 "$ROOT/.venv/bin/python"; do
    c="$(command -v "$c" 2>/dev/null)" || continue
    if "$c" -c "import torch" >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}
if [[ -n "${TESSERA_PYTHON:-}" ]]; then
  PYTHON_HOW="TESSERA_PYTHON"
elif TESSERA_PYTHON="$(find_torch_python)"; then
  PYTHON_HOW="the first python that imports torch"
else
  TESSERA_PYTHON=python3
  PYTHON_HOW="no python imports torch (tried python3, python, /opt/*/{.venv,venv,bin}, /opt/conda, /usr/local/bin, .venv): set TESSERA_PYTHON"
fi
export TESSERA_PYTHON PYTHON_HOW
BUDGET="${DEVICE_CHECK_BUDGET_S:-470}"
JOBS="${DEVICE_CHECK_JOBS:-$(nproc)}"
TEST_JOBS="${DEVICE_CHECK_TEST_JOBS:-4}"
# $OUT returns at most 8 files: device_check.log, build.log, ctest_gpu.log, ctest_rest.log,
# bench.log, bench_results.json, bench_tessera_metrics.jsonl, tessera_profile.json.gz (the
# benchmark's profiled step). Other logs (configure.log, NCCL's, sanitizers') stay in WORKDIR.
WORKDIR="$BUILD_DIR/device_check"
LOGDIR="${OUT:-$WORKDIR}"
STATE="$(mktemp -d "${TMPDIR:-/tmp}/tessera-device-check.XXXXXX")"
mkdir -p "$LOGDIR" "$BUILD_DIR" "$WORKDIR"
export ROOT DRY_RUN BUILD_DIR JOBS TEST_JOBS LOGDIR WORKDIR STATE
T0=$SECONDS

# pip's cmake and ninja live beside the python that has torch; make sure they are on PATH.
PYBIN="$(dirname "$("$TESSERA_PYTHON" -c 'import sys; print(sys.executable)' 2>/dev/null || echo /usr/bin/python3)")"
case ":$PATH:" in *":$PYBIN:"*) ;; *) export PATH="$PATH:$PYBIN" ;; esac
[[ -d /usr/local/cuda/bin ]] && case ":$PATH:" in *":/usr/local/cuda/bin:"*) ;; *) export PATH="$PATH:/usr/local/cuda/bin" ;; esac

note() { echo "$*" >"$STATE/$PHASE.note"; }  # one-line summary of the current phase for the table
export -f note

# ---- phases (each runs in its own bash under `timeout`; PHASE is its name) ----------------------

phase_facts() {
  echo "date (UTC): $(date -u +%FT%TZ)   host: $(uname -srm)   cores: $(nproc)"
  free -g 2>/dev/null | head -2
  df -h "$ROOT" 2>/dev/null | tail -1
  echo "glibc: $(ldd --version 2>&1 | head -1)"
  cat /etc/os-release 2>/dev/null
  local c
  for c in gcc g++ c++ cc cmake ninja nvcc python3 "$TESSERA_PYTHON" ccache mpirun cuobjdump; do
    printf '  %-10s %s\n' "$(basename "$c")" "$(command -v "$c" || echo '(missing)')"
  done
  echo "g++: $(g++ --version 2>&1 | head -1)"
  echo "cmake: $(cmake --version 2>&1 | head -1)   ninja: $(ninja --version 2>&1)"
  echo "nvcc: $(nvcc --version 2>&1 | tail -2 | tr '\n' ' ')"
  ls -d /usr/local/cuda* 2>/dev/null | tr '\n' ' '; echo
  local cuda_lib
  for cuda_lib in /usr/local/cuda/lib64 /usr/local/cuda/lib; do
    [[ -d $cuda_lib ]] && echo "$cuda_lib: $(ls "$cuda_lib" | grep -E '^lib(cudart|nvrtc|cublas|cublasLt|cufft|curand|cusparse|cusolver|cupti|nvJitLink|cufile)\.so$' | tr '\n' ' ')" && break
  done
  "$TESSERA_PYTHON" - <<'EOF' 2>&1
import glob, os, sys
print("python:", sys.version.split()[0], sys.executable)
try:
    import torch
    print("torch:", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)
    print("torch cmake prefix:", torch.utils.cmake_prefix_path)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"gpu: {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
              f"{p.total_memory / 2**30:.1f} GiB")
    site = os.path.dirname(os.path.dirname(torch.__file__))
    libs = sorted(os.path.basename(x) for x in glob.glob(os.path.join(site, "nvidia", "*", "lib", "*.so*")))
    print("pip nvidia libs:", " ".join(libs[:40]), "..." if len(libs) > 40 else "")
except Exception as e:
    print("torch: import failed:", e)
for m in ("transformers", "numpy", "mpi4py"):
    try:
        mod = __import__(m)
        print(f"{m}: {getattr(mod, '__version__', '?')}")
    except Exception as e:
        print(f"{m}: missing ({e.__class__.__name__})")
EOF
  if ((DRY_RUN)); then
    echo "nvidia-smi: skipped (--dry-run)"
  else
    nvidia-smi -L 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  fi
  ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnccl|libmpi\.so' | head -5
  local gpu
  gpu="$( ((DRY_RUN)) && echo "no GPU (dry run)" || nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  note "glibc $(ldd --version 2>&1 | head -1 | grep -oE '[0-9]+\.[0-9]+$'), $(g++ -dumpfullversion 2>/dev/null | sed 's/^/g++ /'), $(cmake --version 2>/dev/null | head -1 | awk '{print "cmake " $3}'), torch $("$TESSERA_PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null), ${gpu:-no GPU}"
}

# Writes $STATE/deps.env: DEPS_PREFIX, DEPS_LD, ABSL_DIR, YAML_DIR, CATCH_DIR.
phase_deps() {
  local root="$ROOT/.deps/root/usr" arch=x86_64-linux-gnu mode="${DEVICE_CHECK_DEPS:-auto}"
  local libdir="$root/lib/$arch"
  [[ -d "$root" ]] || { echo ".deps/root is missing: run scripts/fetch_device_deps.sh on the Debian machine and carry .deps/root, .deps/src and .deps/wheels"; note ".deps/root missing"; return 1; }
  local catch_dir="$root/lib/cmake/Catch2"
  local glibc; glibc="$(ldd --version 2>&1 | head -1 | grep -oE '[0-9]+\.[0-9]+$')"
  echo "glibc here: ${glibc:-unknown}; Debian 12's Abseil and yaml-cpp need GLIBC_2.34 and GLIBCXX_3.4.29"
  local use_debian=0
  if [[ $mode != source ]]; then
    # Load every library (dlopen through ctypes, with the directory on LD_LIBRARY_PATH for their
    # mutual dependencies): a missing GLIBC_/GLIBCXX_ version fails here, not in the build.
    local bad
    bad="$(LD_LIBRARY_PATH="$libdir" "$TESSERA_PYTHON" - "$libdir" <<'EOF'
import ctypes, glob, os, sys
libs = sorted(f for f in glob.glob(os.path.join(sys.argv[1], "lib*.so.*"))
              if not os.path.islink(f) and ("absl" in f or "yaml-cpp" in f))
bad = 0
for f in libs:
    try:
        ctypes.CDLL(f)
    except OSError as e:
        bad += 1
        if bad <= 3:
            print("does not load here:", e, file=sys.stderr)
print(bad if libs else "none")
EOF
)"
    if [[ "$bad" == 0 ]]; then use_debian=1; else echo "Debian libraries that do not load here: $bad"; fi
    [[ $mode == debian ]] && use_debian=1
  fi
  # pkg-config (data/ finds PCRE2 with it): the machine's own, else Debian's pkgconf from .deps.
  local pkgconfig
  pkgconfig="$(command -v pkg-config || command -v pkgconf || true)"
  if [[ -z "$pkgconfig" && -x "$root/bin/pkgconf" ]] && LD_LIBRARY_PATH="$libdir" "$root/bin/pkgconf" --version >/dev/null 2>&1; then
    pkgconfig="$root/bin/pkgconf"
  fi
  echo "pkg-config: ${pkgconfig:-none}"
  if ((use_debian)); then
    # The Debian .pc files say prefix=/usr: the sysroot maps them into .deps/root, and the
    # ALLOW_SYSTEM variables keep -I/usr/include and -L/usr/lib/... (which become .deps paths).
    cat >"$STATE/deps.env" <<EOF
DEPS_PREFIX="$root"
DEPS_LD="$libdir"
ABSL_DIR="$libdir/cmake/absl"
YAML_DIR="$libdir/cmake/yaml-cpp"
CATCH_DIR="$catch_dir"
PKG_CONFIG_EXE="$pkgconfig"
PKG_CONFIG_LIBDIR="$libdir/pkgconfig:$root/share/pkgconfig"
PKG_CONFIG_SYSROOT_DIR="$ROOT/.deps/root"
PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1
PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
EOF
    note "Debian 12 libraries from .deps/root (glibc $glibc)"
    return 0
  fi
  # Fallback: Abseil and yaml-cpp from source with this machine's compiler, static and -fPIC.
  # GCC >= 13 no longer includes <cstdint> transitively, which these 2022 releases relied on.
  local src="$ROOT/.deps/src" work="${TMPDIR:-/tmp}/tessera-deps-build" prefix="${TMPDIR:-/tmp}/tessera-deps-prefix"
  ls "$src"/abseil_*.orig.tar.* "$src"/yaml-cpp_*.orig.tar.* >/dev/null 2>&1 \
    || { echo "no source packages in .deps/src"; note "Debian libraries unusable and no .deps/src"; return 1; }
  rm -rf "$work" "$prefix"; mkdir -p "$work" "$prefix"
  tar xf "$src"/abseil_*.orig.tar.* -C "$work" && tar xf "$src"/yaml-cpp_*.orig.tar.* -C "$work" || return 1
  local common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib
                -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_CXX_STANDARD=20 -DCMAKE_CXX_FLAGS="-include cstdint"
                -DCMAKE_POLICY_VERSION_MINIMUM=3.5 -DBUILD_SHARED_LIBS=OFF)
  echo "building Abseil from source ..."
  cmake -S "$work"/abseil-* -B "$work/absl-build" "${common[@]}" -DABSL_PROPAGATE_CXX_STD=ON -DBUILD_TESTING=OFF \
      >"$work/absl.log" 2>&1 && cmake --build "$work/absl-build" -j "$JOBS" >>"$work/absl.log" 2>&1 \
      && cmake --install "$work/absl-build" >>"$work/absl.log" 2>&1 \
    || { tail -30 "$work/absl.log"; note "Abseil source build failed"; return 1; }
  echo "building yaml-cpp from source ..."
  cmake -S "$work"/yaml-cpp-* -B "$work/yaml-build" "${common[@]}" -DYAML_CPP_BUILD_TESTS=OFF -DYAML_CPP_BUILD_TOOLS=OFF \
      -DYAML_CPP_BUILD_CONTRIB=ON -DYAML_BUILD_SHARED_LIBS=OFF >"$work/yaml.log" 2>&1 \
      && cmake --build "$work/yaml-build" -j "$JOBS" >>"$work/yaml.log" 2>&1 \
      && cmake --install "$work/yaml-build" >>"$work/yaml.log" 2>&1 \
    || { tail -30 "$work/yaml.log"; note "yaml-cpp source build failed"; return 1; }
  if ls "$src"/pcre2_*.orig.tar.* >/dev/null 2>&1; then
    echo "building PCRE2 from source ..."
    tar xf "$src"/pcre2_*.orig.tar.* -C "$work" || return 1
    cmake -S "$work"/pcre2-* -B "$work/pcre2-build" "${common[@]}" -DPCRE2_BUILD_PCRE2_8=ON -DPCRE2_BUILD_TESTS=OFF \
        -DPCRE2_BUILD_PCRE2GREP=OFF -DPCRE2_SUPPORT_JIT=OFF >"$work/pcre2.log" 2>&1 \
        && cmake --build "$work/pcre2-build" -j "$JOBS" >>"$work/pcre2.log" 2>&1 \
        && cmake --install "$work/pcre2-build" >>"$work/pcre2.log" 2>&1 \
      || { tail -30 "$work/pcre2.log"; note "PCRE2 source build failed"; return 1; }
  fi
  [[ -n "$pkgconfig" ]] || echo "WARNING: no pkg-config runs here: data/ cannot find PCRE2"
  local absl_cfg yaml_cfg
  absl_cfg="$(dirname "$(find "$prefix" -name abslConfig.cmake | head -1)")"
  yaml_cfg="$(dirname "$(find "$prefix" -name yaml-cpp-config.cmake | head -1)")"
  cat >"$STATE/deps.env" <<EOF
DEPS_PREFIX="$prefix;$root"
DEPS_LD="$([[ $pkgconfig == "$root/bin/pkgconf" ]] && echo "$libdir")"
ABSL_DIR="$absl_cfg"
YAML_DIR="$yaml_cfg"
CATCH_DIR="$catch_dir"
PKG_CONFIG_EXE="$pkgconfig"
PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig"
EOF
  note "Abseil, yaml-cpp, PCRE2 built from .deps/src (glibc $glibc); Catch2 from .deps/root"
}

load_deps_env() {
  [[ -f "$STATE/deps.env" ]] || return 1
  set -a; . "$STATE/deps.env"; set +a
  [[ -n "${DEPS_LD:-}" ]] && export LD_LIBRARY_PATH="$DEPS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  return 0
}
export -f load_deps_env

phase_configure() {
  load_deps_env || { note "no deps (the deps phase failed)"; return 1; }
  local args=(-S "$ROOT" -B "$BUILD_DIR" -G Ninja "-DCMAKE_BUILD_TYPE=${DEVICE_CHECK_BUILD_TYPE:-Release}" -DCMAKE_CUDA_ARCHITECTURES=90
              "-DCMAKE_PREFIX_PATH=$DEPS_PREFIX" "-Dabsl_DIR=$ABSL_DIR" "-Dyaml-cpp_DIR=$YAML_DIR"
              "-DCatch2_DIR=$CATCH_DIR" -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
  [[ -n "${PKG_CONFIG_EXE:-}" ]] && args+=("-DPKG_CONFIG_EXECUTABLE=$PKG_CONFIG_EXE")
  [[ -n "${DEVICE_CHECK_TORCH_DIR:-}" ]] && args+=("-DTorch_DIR=$DEVICE_CHECK_TORCH_DIR")
  # shellcheck disable=SC2206
  args+=(${DEVICE_CHECK_CMAKE_ARGS:-})
  echo "cmake ${args[*]}"
  cmake "${args[@]}" 2>&1 | tee "$WORKDIR/configure.log" | grep -vE '^-- (Detecting|Check|Looking|Performing|Found Threads)'
  local rc=${PIPESTATUS[0]}
  local summary; summary="$(grep -oE 'Tessera: CUDA compiler [A-Z]+, torch with CUDA [A-Z]+' "$WORKDIR/configure.log" | tail -1)"
  note "${summary:-no Tessera summary line}"
  ((rc == 0)) || return "$rc"
  if ((!DRY_RUN)) && ! grep -q 'torch with CUDA ON' "$WORKDIR/configure.log"; then
    echo "this torch has no CUDA (or CMake did not see it): no CUDA kernels, no gpu tests"; return 1
  fi
}

# The targets the GPU phases run, built first so that they run however long the rest takes.
GPU_TARGETS="tessera gpu_tests gpu_comm_tests nccl_core_smoke"
export GPU_TARGETS

phase_build_gpu() {
  load_deps_env || true
  local targets=() t
  for t in $GPU_TARGETS; do
    ninja -C "$BUILD_DIR" -t query "$t" >/dev/null 2>&1 && targets+=("$t")
  done
  echo "targets: ${targets[*]}"
  build_and_report --target "${targets[@]}"
}

phase_build() { load_deps_env || true; build_and_report; }

# Builds (extra arguments to cmake --build) into build.log and reports errors, warnings and the
# CUDA kernels' register use.
build_and_report() {
  cmake --build "$BUILD_DIR" -j "$JOBS" "$@" >>"$LOGDIR/build.log" 2>&1
  local rc=$?
  grep -E '^\[[0-9]+/[0-9]+\]' "$LOGDIR/build.log" | tail -4
  local warnings; warnings="$(grep -c 'warning:' "$LOGDIR/build.log")"
  if ((rc != 0)); then
    grep -E 'FAILED:' "$LOGDIR/build.log" | head -10
    grep -B2 -A10 -m5 -E 'error:|Error ' "$LOGDIR/build.log" | head -80
    note "build failed (exit $rc), $warnings warnings; see build.log"
    return "$rc"
  fi
  local lib="$BUILD_DIR/kernels/libtessera_cuda_kernels.a" usage=""
  if [[ -f $lib ]] && command -v cuobjdump >/dev/null; then
    # Every instance of every kernel (RMSNorm, add + RMSNorm, rotary, SwiGLU: two lines each), so
    # the cap is well above their count.
    echo "CUDA kernels (cuobjdump --dump-resource-usage):"
    cuobjdump --dump-resource-usage "$lib" 2>&1 | grep -E 'Function|REG' | sed 's/^/  /' | head -200
    usage="; max $(cuobjdump --dump-resource-usage "$lib" 2>/dev/null | grep -oE 'REG:[0-9]+' | cut -d: -f2 | sort -n | tail -1) regs, max stack $(cuobjdump --dump-resource-usage "$lib" 2>/dev/null | grep -oE 'STACK:[0-9]+' | cut -d: -f2 | sort -n | tail -1) B"
  fi
  if grep -q 'spill' "$LOGDIR/build.log"; then grep 'spill' "$LOGDIR/build.log" | head; usage="$usage; SPILLS reported"; fi
  note "built, $warnings compiler warnings$usage"
}

# ctest summary line -> "N/M passed" (or the reason there is none).
ctest_note() {
  local log="$1" line
  if grep -q 'No tests were found' "$log"; then echo "no tests found"; return; fi
  line="$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1)"
  [[ -z "$line" ]] && { echo "no ctest summary"; return; }
  local failed total
  failed="$(sed -E 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")"
  total="$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<<"$line")"
  echo "$((total - failed))/$total passed$( ((failed)) && echo ": $(grep -E '^\s+[0-9]+ - ' "$log" | sed -E 's/^\s+[0-9]+ - //; s/ \(.*//' | head -4 | tr '\n' ',' | sed 's/,$//')")"
}
export -f ctest_note

phase_nccl() {
  load_deps_env || true
  bash "$ROOT/tests/parallel/comm/nccl_device_check.sh" "$BUILD_DIR" "$WORKDIR"
  local rc=$?
  note "$(tail -1 "$WORKDIR/nccl_check_summary.txt" 2>/dev/null || echo "exit $rc")"
  return "$rc"
}

phase_gpu_tests() {
  load_deps_env || true
  (cd "$BUILD_DIR" && ctest -L gpu --output-on-failure --timeout 180 -j1) >"$LOGDIR/ctest_gpu.log" 2>&1
  local rc=$?
  grep -E 'Test +#|tests passed|No tests were found|Total Test time' "$LOGDIR/ctest_gpu.log"
  ((rc == 0)) || grep -B4 -A8 -E 'FAILED:|with expansion|due to unexpected|REQUIRE' "$LOGDIR/ctest_gpu.log" | head -80
  note "$(ctest_note "$LOGDIR/ctest_gpu.log")"
  grep -q 'No tests were found' "$LOGDIR/ctest_gpu.log" && return 1
  return "$rc"
}

phase_bench() {
  load_deps_env || true
  # The peer: this machine's transformers, else the wheels fetched beforehand into .deps/wheels
  # (scripts/fetch_device_deps.sh), installed for this run only.
  if ! "$TESSERA_PYTHON" -c "import transformers" >/dev/null 2>&1; then
    if ls "$ROOT"/.deps/wheels/transformers-*.whl >/dev/null 2>&1 \
       && "$TESSERA_PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORKDIR/peer_site" \
            "$ROOT"/.deps/wheels/*.whl; then
      export PYTHONPATH="$WORKDIR/peer_site${PYTHONPATH:+:$PYTHONPATH}"
      echo "transformers: not installed here; using .deps/wheels ($(ls "$ROOT"/.deps/wheels | tr '\n' ' '))"
    else
      echo "transformers: not installed here and no usable .deps/wheels: the peer will fail, Tessera's figures still print"
    fi
  fi
  # Three runs share the phase: Tessera on ATen's compositions, Tessera, transformers.
  local budget=$((${PHASE_LIMIT:-300} / 3 - 5))
  BENCH_BUILD_DIR="$BUILD_DIR" BENCH_PYTHON="${BENCH_PYTHON:-$TESSERA_PYTHON}" BENCH_TIMEOUT_S="${BENCH_TIMEOUT_S:-$budget}" bash "$ROOT/scripts/bench/gpu_vs_hf.sh" 2>&1 \
    | tee "$LOGDIR/bench.log" | grep -vE '^\s+\[(tessera|hf)\] .*step( ([4-9]|1[0-9])/|=([4-9]|1[0-9]) )'
  local rc=${PIPESTATUS[0]} bdir="${BENCH_DIR:-$BUILD_DIR/gpu_bench}"
  [[ -f "$bdir/results.json" ]] && cp "$bdir/results.json" "$LOGDIR/bench_results.json"
  [[ -f "$bdir/tessera_run/metrics.jsonl" ]] && cp "$bdir/tessera_run/metrics.jsonl" "$LOGDIR/bench_tessera_metrics.jsonl"
  local trace; trace="$(ls "$bdir"/tessera_run/profile_step_*.json 2>/dev/null | head -1)"
  [[ -n "$trace" ]] && gzip -c "$trace" >"$LOGDIR/tessera_profile.json.gz"
  local last; last="$(grep '^gpu_bench ' "$LOGDIR/bench.log" | tail -1)"
  note "${last#gpu_bench }"
  return "$rc"
}

phase_tests() {
  load_deps_env || true
  if [[ ! -f "$ROOT/.cache/sample_corpus/COMPLETE" ]]; then
    echo "no .cache/sample_corpus (not carried): making it here"
    timeout 90 bash "$ROOT/scripts/make_sample_corpus.sh" >"$WORKDIR/corpus.log" 2>&1 || tail -5 "$WORKDIR/corpus.log"
  fi
  if [[ ! -f "$ROOT/.cache/sample_data/COMPLETE" ]]; then
    echo "no .cache/sample_data (not carried): preparing it here"
    TESSERA_BIN="$BUILD_DIR/tessera" timeout 120 bash "$ROOT/scripts/prepare_sample_data.sh" >"$WORKDIR/sample_data.log" 2>&1 \
      || tail -5 "$WORKDIR/sample_data.log"
  fi
  export TESSERA_SAMPLE_DATA="$ROOT/.cache/sample_data"
  (cd "$BUILD_DIR" && ctest -LE gpu --output-on-failure --timeout 240 -j "$TEST_JOBS") >"$LOGDIR/ctest_rest.log" 2>&1
  local rc=$?
  grep -E 'tests passed|No tests were found|Total Test time' "$LOGDIR/ctest_rest.log"
  ((rc == 0)) || grep -E '^\s+[0-9]+ - ' "$LOGDIR/ctest_rest.log" | head -20
  note "$(ctest_note "$LOGDIR/ctest_rest.log")"
  return "$rc"
}

# compute-sanitizer (Firecracker machines run it; gVisor ones refuse the device) on the kernel
# tests: memcheck for out-of-bounds accesses, racecheck for shared-memory hazards in the block
# reductions. Last, with whatever time is left.
phase_sanitize() {
  load_deps_env || true
  command -v compute-sanitizer >/dev/null || { note "no compute-sanitizer"; return 1; }
  local bin="$BUILD_DIR/tests/gpu_tests" tool rc=0 summary=""
  [[ -x $bin ]] || { note "no $bin"; return 1; }
  for tool in memcheck racecheck; do
    echo "--- $tool"
    timeout $(( ${PHASE_LIMIT:-120} / 2 - 5 )) compute-sanitizer --tool "$tool" --error-exitcode 99 \
      "$bin" "CUDA RMSNorm matches the fp64 reference in fp32" >"$WORKDIR/sanitize_$tool.log" 2>&1
    local r=$?
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|Invalid|hazard|test cases' "$WORKDIR/sanitize_$tool.log" | head -8
    summary="$summary $tool:$( ((r == 0)) && echo clean || echo "exit $r")"
    ((r == 0)) || rc=1
  done
  note "${summary# }"
  return "$rc"
}

export -f build_and_report phase_build_gpu
export -f phase_facts phase_deps phase_configure phase_build phase_gpu_tests phase_nccl phase_bench phase_tests phase_sanitize

# ---- runner ------------------------------------------------------------------------------------
declare -A MAX_S=([facts]=30 [deps]=240 [configure]=120 [build_gpu]=330 [build]=360 [gpu_tests]=180 [nccl]=150 [bench]=280 [tests]=240 [sanitize]=120)
# Seconds a phase needs at the least to be worth starting.
declare -A MIN_S=([facts]=5 [deps]=5 [configure]=20 [build_gpu]=60 [build]=60 [gpu_tests]=30 [nccl]=30 [bench]=60 [tests]=30 [sanitize]=40)
NAMES=() STATUS=() SECS=() NOTES=()

run_phase() {
  local name="$1" left=$((BUDGET - (SECONDS - T0)))
  local limit=$((left < ${MAX_S[$name]:-120} ? left : ${MAX_S[$name]:-120}))
  NAMES+=("$name")
  if ! declare -F "phase_$name" >/dev/null; then
    STATUS+=("unknown") SECS+=(0) NOTES+=("no such phase"); return
  fi
  if ((limit < ${MIN_S[$name]:-10})); then
    echo; echo "=== $name: skipped, ${left}s of the ${BUDGET}s budget left"
    STATUS+=("skipped") SECS+=(0) NOTES+=("out of time (${left}s left)"); return
  fi
  echo; echo "=== $name (limit ${limit}s, $((SECONDS - T0))s elapsed) ==="
  local start=$SECONDS rc
  PHASE="$name" PHASE_LIMIT="$limit" timeout --kill-after=10 "$limit" bash -c "phase_$name"
  rc=$?
  local took=$((SECONDS - start)) status=ok
  if ((rc == 124 || rc == 137)); then status="TIMEOUT"; elif ((rc != 0)); then status="FAILED"; fi
  STATUS+=("$status") SECS+=("$took")
  NOTES+=("$(cat "$STATE/$name.note" 2>/dev/null || echo "exit $rc")")
  echo "=== $name: $status in ${took}s"
}

main() {
  echo "Tessera device check: phases [$PHASES], budget ${BUDGET}s, build dir $BUILD_DIR, logs $LOGDIR$( ((DRY_RUN)) && echo ', DRY RUN')"
  echo "python with torch: $TESSERA_PYTHON ($PYTHON_HOW)"
  local p
  for p in $PHASES; do
    export PHASE="$p"
    run_phase "$p"
  done
  local failed=0 i
  for i in "${!NAMES[@]}"; do [[ "${STATUS[$i]}" == ok ]] || failed=$((failed + 1)); done
  {
    echo
    echo "== Tessera device check: $(date -u +%FT%TZ), $((SECONDS - T0))s total =="
    printf '%-10s %-8s %5s  %s\n' phase status secs note
    for i in "${!NAMES[@]}"; do
      printf '%-10s %-8s %5s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
    done
    echo "result: $((${#NAMES[@]} - failed))/${#NAMES[@]} phases ok"
  } | tee "$WORKDIR/summary.txt"
  rm -rf "$STATE"
  return $((failed > 0))
}

main 2>&1 | tee "$LOGDIR/device_check.log"
exit "${PIPESTATUS[0]}"
