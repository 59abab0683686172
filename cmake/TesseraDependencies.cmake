# Finds every dependency once, for all targets. LibTorch comes from the pip package in .venv
# (torch.utils.cmake_prefix_path); the rest from Debian. CUDA is optional.

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
endif()
# TorchConfig looks for CUDA itself when the torch build has it.
find_package(Torch REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION} from ${TORCH_INSTALL_PREFIX}")
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
  message(WARNING "This torch uses the old C++ ABI; Debian's libraries use the new one.")
endif()
# TorchConfig puts flags into TORCH_CXX_FLAGS (the ABI define); apply them project-wide.
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} ${TORCH_CXX_FLAGS}")
set(TESSERA_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR CUDA_FOUND OR TARGET CUDA::cudart AND TORCH_LIBRARIES MATCHES "cuda")
  set(TESSERA_TORCH_HAS_CUDA ON)
endif()

# --- Debian libraries -------------------------------------------------------
find_package(absl REQUIRED)
find_package(yaml-cpp REQUIRED)
if(TARGET yaml-cpp::yaml-cpp)
  set(TESSERA_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(TESSERA_YAML_TARGET yaml-cpp)
endif()
find_package(Threads REQUIRED)

# --- CUDA (optional): our kernels compile wherever nvcc exists ---------------
set(TESSERA_HAVE_CUDA_COMPILER OFF)
if(TESSERA_WITH_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      # Hopper (H100/H200) and Ampere (A100); extend per cluster with -DCMAKE_CUDA_ARCHITECTURES.
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    set(TESSERA_HAVE_CUDA_COMPILER ON)
  endif()
endif()
message(STATUS "Tessera: CUDA compiler ${TESSERA_HAVE_CUDA_COMPILER}, torch with CUDA ${TESSERA_TORCH_HAS_CUDA}")

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
