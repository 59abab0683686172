# The Debian libraries every Tessera target uses (Abseil, yaml-cpp, threads, Protobuf with its
# code generator). Split from TesseraDependencies so that the fuzz build (fuzz/, clang, no
# LibTorch) finds them the same way.
find_package(absl REQUIRED)
find_package(yaml-cpp REQUIRED)
if(TARGET yaml-cpp::yaml-cpp)
  set(TESSERA_YAML_TARGET yaml-cpp::yaml-cpp)
else()
  set(TESSERA_YAML_TARGET yaml-cpp)
endif()
find_package(Threads REQUIRED)
# Protobuf: checkpoint manifests and TensorBoard events. Generated code lands in the build tree
# under the .proto's own path, so `foo/bar.proto` is included as "foo/bar.pb.h".
find_package(Protobuf REQUIRED)
function(tessera_proto_library name)
  add_library(${name} STATIC ${ARGN})
  # protobuf_generate passes -I ${CMAKE_CURRENT_SOURCE_DIR} first and names outputs relative to
  # it; shadowed here (function scope) so that a call from a subdirectory also yields
  # "trainer/x/y.pb.h" and imports written from the project root resolve.
  set(CMAKE_CURRENT_SOURCE_DIR ${PROJECT_SOURCE_DIR})
  protobuf_generate(TARGET ${name} LANGUAGE cpp IMPORT_DIRS ${PROJECT_SOURCE_DIR}
                    PROTOC_OUT_DIR ${PROJECT_BINARY_DIR})
  target_include_directories(${name} PUBLIC ${PROJECT_BINARY_DIR})
  # Not protobuf::libprotobuf: TorchConfig (found first) defines that name as an empty alias, so
  # FindProtobuf keeps it and nothing would be linked. Debian's library by path instead.
  target_include_directories(${name} SYSTEM PUBLIC ${Protobuf_INCLUDE_DIRS})
  target_link_libraries(${name} PUBLIC ${Protobuf_LIBRARIES})
  # Generated code is not ours to warn about.
  target_compile_options(${name} PRIVATE -w)
endfunction()
