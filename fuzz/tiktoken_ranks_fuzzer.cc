// Fuzzes the tiktoken rank file and its metadata JSON (data/tiktoken_files.cc). Input: the rank
// file, a NUL byte, then the metadata (without a NUL, the rank file alone).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "data/tiktoken_files.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = tessera::fuzz::AsView(data, size);
  const size_t nul = input.find('\0');
  const std::string_view ranks_text = input.substr(0, nul);
  const std::string ranks_path = tessera::fuzz::WriteScratchFile("x.tiktoken", ranks_text);
  auto ranks = tessera::data::LoadTiktokenRanks(ranks_path);
  if (nul == std::string_view::npos) return 0;
  const std::string meta_path = tessera::fuzz::WriteScratchFile("x.json", input.substr(nul + 1));
  (void)tessera::data::ReadTokenizerMetadata(meta_path,
                                             ranks.ok() ? static_cast<int64_t>(ranks->size()) : 100);
  return 0;
}
