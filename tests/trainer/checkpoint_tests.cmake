# Checkpoint storage and Hugging Face interop tests (label "checkpoint"), included from
# tests/CMakeLists.txt:
#   checkpoint_tests        one process: CRC-32C, regions, manifest, reader (resharding, damage),
#                           writer (async = sync, retention, full disk), crash safety (SIGKILL of
#                           checkpoint_crash_probe at each point of the protocol), safetensors, HF
#   checkpoint_mpi_tests    the writer on real ranks: one process and mpirun -np 2 / 4 (label mpi)
#   checkpoint.crash_mpi    a rank of a 4-rank job killed mid-save (label mpi)
#   checkpoint.hf_interop   export-hf / import-hf / logits against transformers (Python)
add_executable(checkpoint_crash_probe trainer/checkpoint_crash_probe.cc)
target_link_libraries(checkpoint_crash_probe PRIVATE tessera_checkpoint)
target_include_directories(checkpoint_crash_probe PRIVATE ${PROJECT_SOURCE_DIR})
set_target_properties(checkpoint_crash_probe PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
tessera_use_torch_pch(checkpoint_crash_probe)

tessera_test(checkpoint_tests
  SOURCES
    trainer/checkpoint_crc32c_test.cc
    trainer/checkpoint_region_test.cc
    trainer/checkpoint_manifest_test.cc
    trainer/checkpoint_reader_test.cc
    trainer/checkpoint_writer_test.cc
    trainer/checkpoint_crash_test.cc
    trainer/checkpoint_safetensors_test.cc
    trainer/checkpoint_hf_test.cc
  LIBS tessera_hf
  LABELS "checkpoint")
target_compile_definitions(checkpoint_tests PRIVATE CHECKPOINT_CRASH_PROBE="$<TARGET_FILE:checkpoint_crash_probe>")
add_dependencies(checkpoint_tests checkpoint_crash_probe)
tessera_use_torch_pch(checkpoint_tests)

# Every rank runs the cases in order (tests/parallel/mpi_catch_main.cc is the main).
add_executable(checkpoint_mpi_tests trainer/checkpoint_mpi_test.cc parallel/mpi_catch_main.cc)
target_link_libraries(checkpoint_mpi_tests PRIVATE tessera_checkpoint Catch2::Catch2)
target_compile_definitions(checkpoint_mpi_tests PRIVATE CATCH_CONFIG_PREFIX_ALL TESSERA_CATCH_MAJOR=${TESSERA_CATCH_MAJOR}
                           TESSERA_BINARY_DIR="${PROJECT_BINARY_DIR}")
target_include_directories(checkpoint_mpi_tests PRIVATE ${PROJECT_SOURCE_DIR})
set_target_properties(checkpoint_mpi_tests PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
tessera_use_torch_pch(checkpoint_mpi_tests)
add_test(NAME checkpoint.local COMMAND checkpoint_mpi_tests WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
set_tests_properties(checkpoint.local PROPERTIES LABELS "checkpoint" TIMEOUT 300)
if(TESSERA_HAVE_MPI)
  set(_ckpt_mpi_env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
                    OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1)
  foreach(np 2 4)
    add_test(NAME checkpoint.mpi.np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${MPIEXEC_PREFLAGS} $<TARGET_FILE:checkpoint_mpi_tests>
             WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
    set_tests_properties(checkpoint.mpi.np${np} PROPERTIES LABELS "checkpoint;mpi" TIMEOUT 300 PROCESSORS ${np}
                         ENVIRONMENT "${_ckpt_mpi_env}")
  endforeach()
  add_test(NAME checkpoint.crash_mpi
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/trainer/checkpoint_crash_mpi_test.sh ${MPIEXEC_EXECUTABLE}
                   $<TARGET_FILE:checkpoint_crash_probe>)
  set_tests_properties(checkpoint.crash_mpi PROPERTIES LABELS "checkpoint;mpi" TIMEOUT 300 PROCESSORS 4
                       ENVIRONMENT "${_ckpt_mpi_env}")
endif()

add_test(NAME checkpoint.hf_interop
         COMMAND ${TESSERA_TEST_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/trainer/hf_interop_test.py $<TARGET_FILE:tessera>)
set_tests_properties(checkpoint.hf_interop PROPERTIES LABELS "checkpoint" TIMEOUT 900)
