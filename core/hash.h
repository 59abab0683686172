// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA
// 2014; the variant of Java's SplittableRandom and of Vigna's splitmix64.c): a 64-bit generator
// whose outputs are fixed by its definition, unlike the std:: distributions, whose results differ
// between standard libraries. Sample orders, sweep draws and the tokenizer's hash table are built
// on it, so its outputs must never change.
#pragma once

#include <cstdint>

namespace tessera {

// The generator's increment: 2^64 divided by the golden ratio, made odd.
inline constexpr uint64_t kSplitMix64Gamma = 0x9e3779b97f4a7c15ull;
// The two multipliers of its finalizer (Stafford's "Mix13" variant of MurmurHash3's fmix64).
inline constexpr uint64_t kSplitMix64Multiplier1 = 0xbf58476d1ce4e5b9ull;
inline constexpr uint64_t kSplitMix64Multiplier2 = 0x94d049bb133111ebull;

// The finalizer: a bijection of 64-bit values in which every input bit affects every output bit.
constexpr uint64_t SplitMix64Finalize(uint64_t z) {
  z = (z ^ (z >> 30)) * kSplitMix64Multiplier1;
  z = (z ^ (z >> 27)) * kSplitMix64Multiplier2;
  return z ^ (z >> 31);
}

// A 64-bit hash of one value: the first output of a generator seeded with `x`.
constexpr uint64_t SplitMix64Hash(uint64_t x) { return SplitMix64Finalize(x + kSplitMix64Gamma); }

// The generator: the state advances by kSplitMix64Gamma and each output is the finalized state.
class SplitMix64 {
 public:
  explicit constexpr SplitMix64(uint64_t seed) : state_(seed) {}
  constexpr uint64_t Next() { return SplitMix64Finalize(state_ += kSplitMix64Gamma); }
  // Uniform in [0, 1): the top 53 bits of the next output as a double's mantissa.
  constexpr double NextUnit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace tessera
