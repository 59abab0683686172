// Writing JSON text by hand for the few small documents Tessera emits (safetensors headers,
// Hugging Face config.json and index files, tokenizer metadata, sweep outcomes, metrics lines):
// string quoting and number formatting. Every writer of JSON text uses these, so that escaping
// and number forms are the same everywhere. Reading JSON is core/json.h.
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
// A double with `significant_digits` significant digits as printf's %.*g writes it ("0.0003",
// "12", "1e-05"), and NaN and the infinities as NaN, Infinity and -Infinity, as Python's json
// module writes them: for logs whose readers accept those (metrics.jsonl).
std::string JsonNumberAllowNan(double v, int significant_digits);

}  // namespace tessera
