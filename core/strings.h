// String helpers for error messages. Near-miss hints for names a user got wrong (config keys,
// sweep-file keys, choices): the edit distance and the " (did you mean 'x'?)" suffix that such
// messages end with, so that every "unknown key" message suggests in the same way; and a short,
// printable excerpt of arbitrary bytes (a line of a data file, a token).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// Levenshtein distance: the fewest single-byte insertions, deletions and substitutions that turn
// `a` into `b`.
size_t EditDistance(std::string_view a, std::string_view b);

// Distance between dotted keys ("train.lr"): EditDistance, but at most 1 when the last
// components agree, so that the right name in the wrong section ("model.lr") counts as close.
size_t DottedKeyDistance(std::string_view a, std::string_view b);

// " (did you mean 'K'?)" for the K of `known` nearest to `name` when its distance is below
// `below`, else "". Among equally near names the first in `known` wins.
std::string DidYouMean(std::string_view name, const std::vector<std::string>& known, size_t below,
                       size_t (*distance)(std::string_view, std::string_view) = EditDistance);

// The first `max_bytes` bytes of `bytes`, with "..." when cut, C-escaped (\n, \xff) so that any
// bytes print on one line.
std::string EscapedExcerpt(std::string_view bytes, size_t max_bytes = 60);

}  // namespace tessera
