// A small strict JSON reader (RFC 8259) for JSON-lines corpora and tokenizer metadata files.
// Two entry points: ExtractJsonStringField validates a whole document but materializes only one
// top-level string field (the hot path of preprocess), and ParseJson builds a tree for small
// files. Errors give the byte offset and what was expected.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;  // in file order

  // Defined in json.cc, where JsonValue is complete: std::pair<std::string, JsonValue> needs a
  // complete JsonValue, and clang instantiates the members' special functions at this point.
  JsonValue();
  ~JsonValue();
  JsonValue(const JsonValue&);
  JsonValue(JsonValue&&) noexcept;
  JsonValue& operator=(const JsonValue&);
  JsonValue& operator=(JsonValue&&) noexcept;

  // The last member named `key` (as Python's json module does with duplicates), or nullptr.
  const JsonValue* Find(std::string_view key) const;
};

// Parses exactly one JSON value (surrounding whitespace allowed). Strings must be valid UTF-8;
// \u escapes that form a lone surrogate are rejected because they cannot become UTF-8.
absl::StatusOr<JsonValue> ParseJson(std::string_view text);

enum class JsonField { kFound, kMissing, kNotString };

// Validates `text` as one JSON object and stores the decoded value of its top-level member
// `key` in *value when that member is a string. A malformed document is an InvalidArgument error
// naming the byte offset; a missing or non-string member is reported through the result.
absl::StatusOr<JsonField> ExtractJsonStringField(std::string_view text, std::string_view key,
                                                 std::string* value);

}  // namespace tessera
