// A fingerprint of every logical tensor of a checkpoint: a 64-bit hash of the whole tensor's
// bytes in row-major order, assembled from whatever shards saved it. Two runs that end in the
// same state give the same digests whatever their parallel layouts were, so "bit-identical"
// becomes one comparison per tensor (the exact-resume tests rely on it) without keeping either
// checkpoint. No LibTorch: the bytes are read through CheckpointReader in bounded chunks.
//
//   TS_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(step_dir));
//   TS_ASSIGN_OR_RETURN(std::vector<TensorDigest> digests, DigestTensors(*reader));
//   for (const TensorDigest& d : digests) std::cout << d.name << " " << DigestHex(d.hash) << "\n";
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/manifest.h"

namespace tessera::checkpoint {

// FNV-1a, 64 bits. Each byte's step is a bijection of the running state, so two inputs of the
// same length that differ in a single byte always hash differently; beyond that, a collision
// has the usual 2^-64 odds. Chainable: pass the previous result as `state` to continue a hash.
inline constexpr uint64_t kFnv1a64Offset = 0xcbf29ce484222325ULL;
uint64_t Fnv1a64(const void* data, size_t size, uint64_t state = kFnv1a64Offset);
// 16 lowercase hex digits.
std::string DigestHex(uint64_t hash);

struct TensorDigest {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  uint64_t hash = 0;  // Fnv1a64 of the tensor's bytes (numel x dtype size, row-major)
};

// Which tensors to include, by name; empty: all.
using TensorFilter = std::function<bool(const std::string& name)>;

// The digest of every tensor of the checkpoint that `include` accepts, sorted by name (the
// manifest's own order depends on which ranks wrote first). Every byte's checksum is verified
// on the way, so a damaged shard is an error rather than a different digest.
absl::StatusOr<std::vector<TensorDigest>> DigestTensors(const CheckpointReader& reader,
                                                        const TensorFilter& include = nullptr);

// How many elements of `entry` the digest and the comparison read at a time: at least 2^20, and
// at least its largest shard. The reader verifies (so reads) a shard whole for any part of it, so
// a chunk smaller than a shard would read that shard again for every chunk; with this size each
// shard is read at most twice, and memory stays bounded by what one shard's read needs anyway.
int64_t ChunkElements(const TensorEntry& entry);

}  // namespace tessera::checkpoint
