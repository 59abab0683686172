# Finds every dependency once, for all targets. LibTorch comes from the pip package in .venv
# (torch.utils.cmake_prefix_path); the rest from Debian (or from a prefix such as .deps/root/usr
# given in CMAKE_PREFIX_PATH, see scripts/fetch_device_deps.sh). CUDA is optional.

# --- CUDA toolkit (before LibTorch: a CUDA build of torch looks for it itself) -----------
# TorchConfig of a CUDA torch runs torch's FindCUDA and FindCUDAToolkit, enables the CUDA
# language and fails unless both find the toolkit; our own kernels need nvcc too. The toolkit
# root is the first of: CUDAToolkit_ROOT / CUDA_TOOLKIT_ROOT_DIR given to CMake, $CUDAToolkit_ROOT,
# $CUDA_HOME, $CUDA_PATH, the toolkit of CMAKE_CUDA_COMPILER, /usr/local/cuda, the nvcc on PATH;
# a candidate counts when it holds bin/nvcc and include/cuda_runtime.h (a wrapper script named
# nvcc elsewhere, as on some images, does not).
set(TESSERA_CUDA_ROOT "")
if(TESSERA_WITH_CUDA)
  set(_tessera_cuda_candidates ${CUDAToolkit_ROOT} ${CUDA_TOOLKIT_ROOT_DIR} "$ENV{CUDAToolkit_ROOT}"
                               "$ENV{CUDA_HOME}" "$ENV{CUDA_PATH}")
  if(CMAKE_CUDA_COMPILER)
    get_filename_component(_nvcc_real "${CMAKE_CUDA_COMPILER}" REALPATH)
    get_filename_component(_nvcc_root "${_nvcc_real}/../.." ABSOLUTE)
    list(APPEND _tessera_cuda_candidates "${_nvcc_root}")
  endif()
  list(APPEND _tessera_cuda_candidates /usr/local/cuda)
  find_program(_tessera_path_nvcc nvcc)
  if(_tessera_path_nvcc)
    get_filename_component(_nvcc_real "${_tessera_path_nvcc}" REALPATH)
    get_filename_component(_nvcc_root "${_nvcc_real}/../.." ABSOLUTE)
    list(APPEND _tessera_cuda_candidates "${_nvcc_root}")
  endif()
  foreach(_root IN LISTS _tessera_cuda_candidates)
    if(_root AND EXISTS "${_root}/bin/nvcc" AND EXISTS "${_root}/include/cuda_runtime.h")
      get_filename_component(TESSERA_CUDA_ROOT "${_root}" REALPATH)
      break()
    endif()
  endforeach()
  if(TESSERA_CUDA_ROOT)
    # Hints for torch's FindCUDA (CUDA_TOOLKIT_ROOT_DIR), FindCUDAToolkit (CUDAToolkit_ROOT) and
    # the CUDA language; values given on the command line win.
    set(CUDAToolkit_ROOT "${TESSERA_CUDA_ROOT}")
    set(CUDA_TOOLKIT_ROOT_DIR "${TESSERA_CUDA_ROOT}" CACHE PATH "CUDA toolkit root (found by Tessera)")
    if(NOT CMAKE_CUDA_COMPILER)
      set(CMAKE_CUDA_COMPILER "${TESSERA_CUDA_ROOT}/bin/nvcc" CACHE FILEPATH "CUDA compiler (found by Tessera)")
    endif()
  endif()
  # Architectures: -DCMAKE_CUDA_ARCHITECTURES=90 (H100/H200) etc., default A100 + H100.
  if(CMAKE_CUDA_ARCHITECTURES)
    set(TESSERA_CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
  else()
    set(TESSERA_CUDA_ARCHITECTURES 80 90)
  endif()
  # A CUDA torch ignores CMAKE_CUDA_ARCHITECTURES (it warns and sets it OFF) and adds -gencode
  # flags for TORCH_CUDA_ARCH_LIST instead, which it would otherwise detect by running a program
  # on the GPU. Give it the same list, written its way ("90" -> "9.0", "90a" -> "9.0a").
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "")
    foreach(_arch IN LISTS TESSERA_CUDA_ARCHITECTURES)
      string(REGEX REPLACE "-(real|virtual)$" "" _arch "${_arch}")
      if(_arch MATCHES "^([0-9]+)([0-9][a-z]?)$")
        list(APPEND TORCH_CUDA_ARCH_LIST "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
      endif()
    endforeach()
  endif()
  # CUDA sources are C++17 (torch would ask for its C++ standard, 20, which nvcc with older
  # CMake cannot be told), without GNU extensions.
  if(NOT CMAKE_CUDA_STANDARD)
    set(CMAKE_CUDA_STANDARD 17)
  endif()
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_EXTENSIONS OFF)
endif()

# --- LibTorch ---------------------------------------------------------------
if(NOT Torch_DIR)
  set(_tessera_python "${CMAKE_SOURCE_DIR}/.venv/bin/python")
  if(DEFINED ENV{TESSERA_PYTHON})
    set(_tessera_python "$ENV{TESSERA_PYTHON}")
  elseif(NOT EXISTS "${_tessera_python}")
    set(_tessera_python python3)
  endif()
  execute_process(
    COMMAND "${_tessera_python}" -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "Tessera needs the pip package torch: '${_tessera_python} -c \"import torch\"' failed. "
                        "Run scripts/setup.sh, or set TESSERA_PYTHON to a python that has torch.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
  get_filename_component(_torch_site "${_torch_prefix}/../../.." ABSOLUTE)
else()
  get_filename_component(_torch_site "${Torch_DIR}/../../../.." ABSOLUTE)
endif()
# A CUDA torch links NVRTC (TorchConfig's CUDA_NVRTC_LIB, from FindCUDA's CUDA_nvrtc_LIBRARY).
# A toolkit without it (an image assembled from pip's CUDA wheels) can use the copy that the pip
# package nvidia-cuda-nvrtc installs beside torch (site-packages/nvidia/cu13/lib or
# nvidia/cuda_nvrtc/lib), which is the one torch loads anyway.
if(TESSERA_CUDA_ROOT AND NOT CUDA_nvrtc_LIBRARY)
  find_library(_tessera_toolkit_nvrtc nvrtc PATHS "${TESSERA_CUDA_ROOT}" PATH_SUFFIXES lib64 lib NO_DEFAULT_PATH)
  if(NOT _tessera_toolkit_nvrtc)
    file(GLOB _tessera_pip_nvrtc "${_torch_site}/nvidia/*/lib/libnvrtc.so*")
    list(FILTER _tessera_pip_nvrtc EXCLUDE REGEX "builtins|alt")
    if(_tessera_pip_nvrtc)
      list(SORT _tessera_pip_nvrtc)
      list(GET _tessera_pip_nvrtc 0 _nvrtc)
      set(CUDA_nvrtc_LIBRARY "${_nvrtc}" CACHE FILEPATH "NVRTC (pip package beside torch)")
      message(STATUS "Tessera: the CUDA toolkit has no libnvrtc; using ${_nvrtc}")
    endif()
  endif()
endif()
# TorchConfig looks for CUDA itself when the torch build has it.
find_package(Torch REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION} from ${TORCH_INSTALL_PREFIX}")
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
  message(WARNING "This torch uses the old C++ ABI; Debian's libraries use the new one.")
endif()
# TorchConfig puts flags into TORCH_CXX_FLAGS (the ABI define); apply them project-wide.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")
# A CUDA build of torch defines the imported target torch_cuda (Caffe2Targets.cmake, linked
# through TORCH_LIBRARIES -> torch -> torch_cuda_library) and fills TORCH_CUDA_LIBRARIES; a CPU
# build defines neither.
set(TESSERA_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda)
  set(TESSERA_TORCH_HAS_CUDA ON)
endif()

# --- Debian libraries (Abseil, yaml-cpp, Protobuf, threads) ------------------------
include(TesseraHostDependencies)

# --- CUDA (optional): our kernels compile wherever nvcc exists ---------------
# With a CUDA torch, TorchConfig has already enabled the language (with its -gencode flags for
# TORCH_CUDA_ARCH_LIST in CMAKE_CUDA_FLAGS and CMAKE_CUDA_ARCHITECTURES set to OFF); otherwise
# CMake's own architecture flags are used.
set(TESSERA_HAVE_CUDA_COMPILER OFF)
if(TESSERA_WITH_CUDA)
  if(NOT TESSERA_TORCH_HAS_CUDA)
    set(CMAKE_CUDA_ARCHITECTURES ${TESSERA_CUDA_ARCHITECTURES})
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(TARGET CUDA::cudart)
      set(TESSERA_HAVE_CUDA_COMPILER ON)
    else()
      message(WARNING "nvcc found (${CMAKE_CUDA_COMPILER}) but not the CUDA runtime library: CUDA kernels skipped")
    endif()
  endif()
endif()
if(TESSERA_WITH_CUDA AND TESSERA_TORCH_HAS_CUDA AND NOT TESSERA_HAVE_CUDA_COMPILER)
  message(FATAL_ERROR "This torch is a CUDA build, but no CUDA compiler and runtime were found: "
                      "set CUDAToolkit_ROOT (or CUDA_HOME) to the CUDA toolkit")
endif()
if(TESSERA_HAVE_CUDA_COMPILER)
  set(_tessera_archs "${CMAKE_CUDA_ARCHITECTURES}")
  if(TESSERA_TORCH_HAS_CUDA)
    set(_tessera_archs "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}")
  endif()
  message(STATUS "Tessera: CUDA ${CMAKE_CUDA_COMPILER_VERSION} at ${CUDAToolkit_BIN_DIR}, ${_tessera_archs}")
endif()
# Tessera's CUDA kernels run (and the gpu tests are built) where both hold.
set(TESSERA_CUDA_KERNELS OFF)
if(TESSERA_TORCH_HAS_CUDA AND TESSERA_HAVE_CUDA_COMPILER)
  set(TESSERA_CUDA_KERNELS ON)
endif()
message(STATUS "Tessera: CUDA compiler ${TESSERA_HAVE_CUDA_COMPILER}, torch with CUDA ${TESSERA_TORCH_HAS_CUDA}")

# --- MPI: the CPU backend, the multi-rank tests, NCCL's bootstrap under mpirun ---------------
# Without it parallel/ builds stubs that say so (a GPU job can still run under srun with NCCL),
# but the multi-rank tests (labels mpi, parity, checkpoint) could not be registered: a build
# that silently lost them would pass ctest while testing far less. So a missing MPI is an error
# unless the user opts out with -DTESSERA_ALLOW_NO_MPI=ON.
option(TESSERA_ALLOW_NO_MPI "Build without MPI, leaving out the CPU backend and every multi-rank test" OFF)
find_package(MPI COMPONENTS C QUIET)
set(TESSERA_HAVE_MPI OFF)
if(MPI_C_FOUND)
  set(TESSERA_HAVE_MPI ON)
elseif(TESSERA_ALLOW_NO_MPI)
  message(WARNING "Tessera: no MPI found and TESSERA_ALLOW_NO_MPI=ON: building without the MPI backend; "
                  "left out of the tests: comm.mpi.*, comm.failure.*, *.mpi.np*, checkpoint.mpi.*, "
                  "checkpoint.crash_mpi, checkpoint.resume_*, parity.*, trainer.run_outcomes")
else()
  message(FATAL_ERROR "Tessera: no MPI found (Open MPI's libopenmpi-dev and openmpi-bin; scripts/setup.sh "
                      "installs them). The CPU backend and every multi-rank test need it. To build without "
                      "them anyway, configure with -DTESSERA_ALLOW_NO_MPI=ON.")
endif()
message(STATUS "Tessera: MPI ${TESSERA_HAVE_MPI} ${MPI_C_LIBRARY_VERSION_STRING} (${MPIEXEC_EXECUTABLE})")

# --- NCCL (optional): the GPU backend ------------------------------------------------------
# Looked for in NCCL_ROOT / $NCCL_ROOT / $NCCL_HOME, the pip package nvidia-nccl-cu* beside torch
# or in .venv (scripts/setup.sh installs it there), the CUDA toolkit, then the system paths. It
# needs the CUDA toolkit too. TESSERA_HAVE_NCCL: the NCCL-only part (parallel/nccl_core) builds;
# TESSERA_NCCL_BACKEND: LibTorch has CUDA as well, so the backend is linked (with a CPU LibTorch
# it is compiled as a check only).
set(_tessera_nccl_hints ${NCCL_ROOT} "$ENV{NCCL_ROOT}" "$ENV{NCCL_HOME}" "${_torch_site}/nvidia/nccl")
file(GLOB _tessera_venv_nccl "${CMAKE_SOURCE_DIR}/.venv/lib/python3*/site-packages/nvidia/nccl")
list(APPEND _tessera_nccl_hints ${_tessera_venv_nccl} ${TESSERA_CUDA_ROOT})
find_path(TESSERA_NCCL_INCLUDE_DIR nccl.h HINTS ${_tessera_nccl_hints} PATH_SUFFIXES include)
find_library(TESSERA_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_tessera_nccl_hints}
             PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
set(TESSERA_HAVE_NCCL OFF)
set(TESSERA_NCCL_BACKEND OFF)
if(NOT TESSERA_HAVE_CUDA_COMPILER)
  set(TESSERA_NCCL_MISSING_REASON "the build found no CUDA toolkit")
elseif(NOT TESSERA_NCCL_INCLUDE_DIR OR NOT TESSERA_NCCL_LIBRARY)
  set(TESSERA_NCCL_MISSING_REASON "the build found no NCCL (nccl.h and libnccl; scripts/setup.sh installs the pip package nvidia-nccl-cu13 into .venv, or set NCCL_ROOT)")
else()
  file(STRINGS "${TESSERA_NCCL_INCLUDE_DIR}/nccl.h" _nccl_version_lines REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
  string(REGEX REPLACE ".*NCCL_MAJOR ([0-9]+).*" "\\1" _nccl_major "${_nccl_version_lines}")
  string(REGEX REPLACE ".*NCCL_MINOR ([0-9]+).*" "\\1" _nccl_minor "${_nccl_version_lines}")
  string(REGEX REPLACE ".*NCCL_PATCH ([0-9]+).*" "\\1" _nccl_patch "${_nccl_version_lines}")
  set(TESSERA_NCCL_VERSION "${_nccl_major}.${_nccl_minor}.${_nccl_patch}")
  if(TESSERA_NCCL_VERSION VERSION_LESS 2.18)
    set(TESSERA_NCCL_MISSING_REASON "NCCL ${TESSERA_NCCL_VERSION} is older than 2.18 (ncclCommSplit)")
  else()
    set(TESSERA_HAVE_NCCL ON)
    add_library(Tessera::nccl UNKNOWN IMPORTED)
    set_target_properties(Tessera::nccl PROPERTIES IMPORTED_LOCATION "${TESSERA_NCCL_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${TESSERA_NCCL_INCLUDE_DIR}")
    if(TESSERA_TORCH_HAS_CUDA)
      set(TESSERA_NCCL_BACKEND ON)
      set(TESSERA_NCCL_MISSING_REASON "")
    else()
      set(TESSERA_NCCL_MISSING_REASON "this LibTorch is a CPU build (NCCL ${TESSERA_NCCL_VERSION} was found; the backend is compiled as a check only)")
    endif()
  endif()
endif()
message(STATUS "Tessera: NCCL ${TESSERA_HAVE_NCCL} ${TESSERA_NCCL_VERSION} (${TESSERA_NCCL_LIBRARY}), NCCL backend ${TESSERA_NCCL_BACKEND}")

# --- Test framework: Catch2 v2 (Debian 12) or v3 (Debian 13) ------------------
if(TESSERA_BUILD_TESTS)
  find_package(Catch2 REQUIRED)
  if(Catch2_VERSION VERSION_GREATER_EQUAL 3)
    set(TESSERA_CATCH_MAJOR 3)
  else()
    set(TESSERA_CATCH_MAJOR 2)
  endif()
  message(STATUS "Catch2 ${Catch2_VERSION}")
endif()

# --- Precompiled LibTorch header, shared by every target that includes torch --
# tessera_pch is a tiny object library whose only job is to own the PCH.
function(tessera_use_torch_pch target)
  if(TARGET tessera_torch_pch)
    target_precompile_headers(${target} REUSE_FROM tessera_torch_pch)
  endif()
endfunction()
