// What the fuzz targets share: most readers open a path (they mmap or pread), so each target
// writes its input to a file in a private temporary directory and hands the reader that path.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace tessera::fuzz {

// A directory of this process's own (libFuzzer's -fork/-jobs run several processes at once),
// removed by nobody: it lives under $TMPDIR and holds a few small files.
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    const char* tmp = getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tessera_fuzz_XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      perror("mkdtemp");
      abort();
    }
    return pattern;
  }();
  return dir;
}

// Writes `bytes` to ScratchDir()/name (replacing it) and returns the path.
inline std::string WriteScratchFile(const std::string& name, std::string_view bytes) {
  const std::string path = ScratchDir() + "/" + name;
  FILE* f = fopen(path.c_str(), "wb");
  if (f == nullptr || fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || fclose(f) != 0) {
    perror(path.c_str());
    abort();
  }
  return path;
}

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace tessera::fuzz
