// The pre-tokenizer: an encoding's split pattern (tiktoken's regex syntax), compiled with PCRE2
// (JIT when available), cuts text into the pieces that BPE then merges within. Matching gives
// exactly tiktoken's pieces whatever the Unicode version of the system's PCRE2: `\s` and the
// general categories are rewritten from generated tables (see split_pattern.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::data {

class SplitPattern {
 public:
  // Compiles `pattern`. Errors start with `source`, which names the tokenizer.
  static absl::StatusOr<std::unique_ptr<SplitPattern>> Compile(const std::string& pattern,
                                                               const std::string& source);
  ~SplitPattern();
  SplitPattern(const SplitPattern&) = delete;
  SplitPattern& operator=(const SplitPattern&) = delete;

  // Calls `piece(match)` for each match in `text` (valid UTF-8, not checked), left to right.
  // Text that the pattern does not match is skipped, as tiktoken's find_iter does. Thread-safe:
  // each thread keeps its own PCRE2 match state.
  template <typename F>
  absl::Status ForEach(std::string_view text, F&& piece) const;
  absl::Status ForEachMatch(std::string_view text, void (*fn)(void*, std::string_view), void* arg) const;

 private:
  struct Regex;
  struct MatchState;
  SplitPattern() = default;
  MatchState* ThreadMatchState() const;

  std::string source_;
  std::unique_ptr<Regex> regex_;
  uint64_t serial_ = 0;  // identifies this pattern in per-thread match states
};

template <typename F>
absl::Status SplitPattern::ForEach(std::string_view text, F&& piece) const {
  using Fn = std::remove_reference_t<F>;
  return ForEachMatch(
      text, [](void* arg, std::string_view p) { (*static_cast<Fn*>(arg))(p); },
      const_cast<void*>(static_cast<const void*>(&piece)));
}

}  // namespace tessera::data
