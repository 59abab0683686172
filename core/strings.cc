// Edit distance, "did you mean" hints and escaped excerpts (strings.h).
#include "core/strings.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace tessera {

size_t EditDistance(std::string_view a, std::string_view b) {
  // One row of the dynamic-programming table at a time: row[j] is the distance between the
  // first i bytes of a and the first j bytes of b.
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

size_t DottedKeyDistance(std::string_view a, std::string_view b) {
  const size_t d = EditDistance(a, b);
  // rfind gives npos without a dot, and npos + 1 == 0: the whole key is its last component.
  const std::string_view a_leaf = a.substr(a.rfind('.') + 1);
  const std::string_view b_leaf = b.substr(b.rfind('.') + 1);
  return a_leaf == b_leaf ? std::min<size_t>(d, 1) : d;
}

std::string DidYouMean(std::string_view name, const std::vector<std::string>& known, size_t below,
                       size_t (*distance)(std::string_view, std::string_view)) {
  const std::string* best = nullptr;
  size_t best_distance = below;
  for (const std::string& k : known) {
    const size_t d = distance(name, k);
    if (d < best_distance) {
      best_distance = d;
      best = &k;
    }
  }
  return best ? absl::StrCat(" (did you mean '", *best, "'?)") : "";
}

std::string EscapedExcerpt(std::string_view bytes, size_t max_bytes) {
  std::string out(bytes.substr(0, max_bytes));
  if (bytes.size() > max_bytes) out += "...";
  return absl::CHexEscape(out);
}

}  // namespace tessera
