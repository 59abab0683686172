// Writing JSON text by hand for the few small documents Tessera emits (safetensors headers,
// Hugging Face config.json and index files, debug output): string quoting and number formatting
// that round-trips. Reading JSON is data/json.h.
#pragma once

#include <string>
#include <string_view>

namespace tessera {

// `s` as a JSON string literal, quotes included (control characters, quote and backslash
// escaped; other bytes, UTF-8 included, as they are).
std::string JsonQuote(std::string_view s);
// A double as JSON: the shortest text that reads back as the same double ("1e-05", "500000.0"
// keeps a decimal point so Python reads a float); NaN and infinities, which JSON lacks, as null.
std::string JsonNumber(double v);

}  // namespace tessera
