// Overflow-checked integer arithmetic for sizes and offsets that come from files. A reader that
// multiplies a count from an untrusted header by an entry size must not wrap around into a small,
// plausible number (and signed overflow is undefined behaviour), so every such product or sum goes
// through these helpers, which return std::nullopt instead of a wrapped result.
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>
#include <span>

namespace tessera {

template <std::integral T>
constexpr std::optional<T> CheckedAdd(T a, T b) {
  T result;
  if (__builtin_add_overflow(a, b, &result)) return std::nullopt;
  return result;
}

template <std::integral T>
constexpr std::optional<T> CheckedSub(T a, T b) {
  T result;
  if (__builtin_sub_overflow(a, b, &result)) return std::nullopt;
  return result;
}

template <std::integral T>
constexpr std::optional<T> CheckedMul(T a, T b) {
  T result;
  if (__builtin_mul_overflow(a, b, &result)) return std::nullopt;
  return result;
}

// The number of elements of a tensor of shape `dims` (1 for a scalar), or std::nullopt when a
// dimension is negative or the product does not fit int64_t. A zero dimension makes the count 0
// whatever the others, as LibTorch counts it.
constexpr std::optional<int64_t> CheckedNumElements(std::span<const int64_t> dims) {
  int64_t n = 1;
  bool overflow = false;
  for (int64_t d : dims) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(n, d, &n)) overflow = true;
  }
  // [2^62, 4, 0] has 0 elements; only a product that stays non-zero can overflow.
  for (int64_t d : dims) {
    if (d == 0) return 0;
  }
  if (overflow) return std::nullopt;
  return n;
}

// `count` elements of `element_size` bytes each, in bytes, or std::nullopt when `count` is negative
// or the product does not fit int64_t (file offsets are signed).
constexpr std::optional<int64_t> CheckedByteSize(int64_t count, uint64_t element_size) {
  if (count < 0 || element_size > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return CheckedMul(count, static_cast<int64_t>(element_size));
}

}  // namespace tessera
