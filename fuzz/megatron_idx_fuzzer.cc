// Fuzzes the Megatron .idx reader (data/indexed_dataset.cc). Input: 2 bytes giving the .bin's
// length (little-endian, in bytes), then the .idx file. Every sequence the index admits is read
// back, so an index that passes Open but points outside the .bin is caught by ASan.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"
#include "fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t bin_bytes = data[0] | (static_cast<size_t>(data[1]) << 8);
  std::string bin(bin_bytes, '\0');
  for (size_t i = 0; i < bin_bytes; ++i) bin[i] = static_cast<char>(i * 7);
  tessera::fuzz::WriteScratchFile("x.bin", bin);
  const std::string idx_path =
      tessera::fuzz::WriteScratchFile("x.idx", tessera::fuzz::AsView(data + 2, size - 2));
  const std::string prefix = idx_path.substr(0, idx_path.size() - 4);
  auto dataset = tessera::data::IndexedDataset::Open(prefix);
  if (!dataset.ok()) return 0;
  const tessera::data::IndexedDataset& d = **dataset;
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < std::min<int64_t>(d.num_sequences(), 4096); ++i) {
    const int64_t length = d.sequence_length(i);
    if (length > (1 << 16)) continue;
    tokens.resize(static_cast<size_t>(length));
    (void)d.ReadTokens(d.sequence_start(i), length, tokens.data());
  }
  for (int64_t doc = 0; doc <= std::min<int64_t>(d.num_documents(), 4096); ++doc) (void)d.document_index(doc);
  return 0;
}
