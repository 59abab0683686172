// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0),
// which does not convert from std::string_view. AbslView bridges the two at the few places where
// a std::string_view meets StrCat or a heterogeneous hash-map lookup.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace tessera {

inline absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace tessera
