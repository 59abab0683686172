// Digests of a checkpoint's logical tensors (tensor_digest.h).
#include "checkpoint/tensor_digest.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {

uint64_t Fnv1a64(const void* data, size_t size, uint64_t state) {
  constexpr uint64_t kPrime = 0x100000001b3ULL;
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) state = (state ^ bytes[i]) * kPrime;
  return state;
}

std::string DigestHex(uint64_t hash) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

int64_t ChunkElements(const TensorEntry& entry) {
  int64_t chunk = int64_t{1} << 20;
  for (const ShardRecord& s : entry.shards) chunk = std::max(chunk, s.region.numel());
  return chunk;
}

absl::StatusOr<std::vector<TensorDigest>> DigestTensors(const CheckpointReader& reader,
                                                        const TensorFilter& include) {
  std::vector<const TensorEntry*> entries;
  for (const TensorEntry& t : reader.manifest().tensors) {
    if (!include || include(t.name)) entries.push_back(&t);
  }
  std::sort(entries.begin(), entries.end(),
            [](const TensorEntry* a, const TensorEntry* b) { return a->name < b->name; });
  std::vector<TensorDigest> out;
  std::vector<char> buffer;
  for (const TensorEntry* t : entries) {
    const int64_t numel = NumElements(t->global_shape);
    const int64_t chunk = ChunkElements(*t);
    const size_t element_size = DTypeSize(t->dtype);
    uint64_t hash = kFnv1a64Offset;
    for (int64_t first = 0; first < numel; first += chunk) {
      const int64_t count = std::min(chunk, numel - first);
      buffer.resize(static_cast<size_t>(count) * element_size);
      TS_RETURN_IF_ERROR(
          Annotate(reader.ReadRegion(t->name, Region::Flat(first, count), buffer.data(), buffer.size()),
                   absl::StrCat("digest of ", reader.step_dir(), ": ")));
      hash = Fnv1a64(buffer.data(), buffer.size(), hash);
    }
    out.push_back({t->name, t->dtype, t->global_shape, hash});
  }
  return out;
}

}  // namespace tessera::checkpoint
