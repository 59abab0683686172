// Recursive-descent JSON parser. One Parser serves both entry points: when the destination
// pointer is null a value is validated and skipped without allocating, which keeps
// ExtractJsonStringField fast on JSON lines with large unused fields.
#include "core/json.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/absl_string_view.h"
#include "core/status_macros.h"
#include "core/utf8.h"

namespace tessera {

JsonValue::JsonValue() = default;
JsonValue::~JsonValue() = default;
JsonValue::JsonValue(const JsonValue&) = default;
JsonValue::JsonValue(JsonValue&&) noexcept = default;
JsonValue& JsonValue::operator=(const JsonValue&) = default;
JsonValue& JsonValue::operator=(JsonValue&&) noexcept = default;

namespace {

// Deep enough for any real metadata, shallow enough that recursion cannot exhaust the stack.
constexpr int kMaxDepth = 256;

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  absl::Status Error(std::string_view expected) const {
    std::string found = pos_ < s_.size() ? absl::StrFormat("'%c'", s_[pos_]) : "end of input";
    if (pos_ < s_.size() &&
        (static_cast<unsigned char>(s_[pos_]) < 0x20 || static_cast<unsigned char>(s_[pos_]) >= 0x80)) {
      found = absl::StrFormat("byte 0x%02x", static_cast<unsigned char>(s_[pos_]));
    }
    return absl::InvalidArgumentError(absl::StrCat("malformed JSON at byte offset ", pos_, ": expected ",
                                                   AbslView(expected), ", found ", found));
  }

  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool AtEnd() const { return pos_ >= s_.size(); }
  size_t pos() const { return pos_; }
  char Peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }

  // Parses a value into *out, or validates and skips it when out is null.
  absl::Status Value(JsonValue* out, int depth) {
    if (depth > kMaxDepth) return Error(absl::StrCat("at most ", kMaxDepth, " levels of nesting"));
    SkipSpace();
    switch (Peek()) {
      case '{':
        return Object(out, depth);
      case '[':
        return Array(out, depth);
      case '"': {
        if (out) out->type = JsonValue::Type::kString;
        return String(out ? &out->string : nullptr);
      }
      case 't':
        return Literal("true", out, JsonValue::Type::kBool, true);
      case 'f':
        return Literal("false", out, JsonValue::Type::kBool, false);
      case 'n':
        return Literal("null", out, JsonValue::Type::kNull, false);
      default:
        return Number(out);
    }
  }

  // Parses a string starting at the opening quote; decodes it into *out unless out is null.
  absl::Status String(std::string* out) {
    if (Peek() != '"') return Error("'\"'");
    ++pos_;
    if (out) out->clear();
    while (true) {
      // Copy the run of plain characters at once.
      size_t run = pos_;
      while (run < s_.size()) {
        const unsigned char c = static_cast<unsigned char>(s_[run]);
        if (c == '"' || c == '\\' || c < 0x20) break;
        ++run;
      }
      if (out) out->append(s_.data() + pos_, run - pos_);
      pos_ = run;
      if (pos_ >= s_.size()) return Error("'\"' closing the string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c != '\\')
        return Error("an escaped control character (raw control characters are not allowed in strings)");
      ++pos_;
      if (pos_ >= s_.size()) return Error("an escape character");
      const char e = s_[pos_++];
      char plain = 0;
      switch (e) {
        case '"':
          plain = '"';
          break;
        case '\\':
          plain = '\\';
          break;
        case '/':
          plain = '/';
          break;
        case 'b':
          plain = '\b';
          break;
        case 'f':
          plain = '\f';
          break;
        case 'n':
          plain = '\n';
          break;
        case 'r':
          plain = '\r';
          break;
        case 't':
          plain = '\t';
          break;
        case 'u':
          TS_RETURN_IF_ERROR(UnicodeEscape(out));
          continue;
        default:
          --pos_;
          return Error("one of the escapes \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX");
      }
      if (out) out->push_back(plain);
    }
  }

 private:
  // The rest of a \uXXXX escape (after the "\u"), a surrogate pair taken as one; appends the
  // code point's UTF-8 to *out unless out is null.
  absl::Status UnicodeEscape(std::string* out) {
    uint32_t cp = 0;
    TS_RETURN_IF_ERROR(Hex4(&cp));
    if (IsHighSurrogate(cp)) {
      uint32_t low = 0;
      if (pos_ + 1 < s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u') {
        pos_ += 2;
        TS_RETURN_IF_ERROR(Hex4(&low));
        if (!IsLowSurrogate(low)) {
          pos_ -= 6;
          return Error("a low surrogate \\uDC00-\\uDFFF after a high surrogate");
        }
        cp = CombineSurrogates(cp, low);
      } else {
        return Error("a low surrogate escape after a high surrogate (a lone surrogate is not valid UTF-8)");
      }
    } else if (IsLowSurrogate(cp)) {
      pos_ -= 6;
      return Error("a character, not a lone low surrogate (it is not valid UTF-8)");
    }
    if (out) AppendUtf8(cp, out);
    return absl::OkStatus();
  }

  absl::Status Hex4(uint32_t* cp) {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      if (pos_ >= s_.size()) return Error("four hex digits after \\u");
      const char c = s_[pos_];
      uint32_t d;
      if (c >= '0' && c <= '9')
        d = c - '0';
      else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        d = c - 'A' + 10;
      else
        return Error("four hex digits after \\u");
      v = v * 16 + d;
      ++pos_;
    }
    *cp = v;
    return absl::OkStatus();
  }

  absl::Status Literal(std::string_view word, JsonValue* out, JsonValue::Type type, bool value) {
    if (s_.substr(pos_, word.size()) != word) return Error(absl::StrCat("a value ('", AbslView(word), "'?)"));
    pos_ += word.size();
    if (out) {
      out->type = type;
      out->boolean = value;
    }
    return absl::OkStatus();
  }

  absl::Status Number(JsonValue* out) {
    const size_t start = pos_;
    auto digits = [&] {
      size_t n = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_, ++n;
      return n;
    };
    if (Peek() == '-') ++pos_;
    if (Peek() == '0') {
      ++pos_;
    } else if (Peek() >= '1' && Peek() <= '9') {
      digits();
    } else {
      return Error("a JSON value");
    }
    if (Peek() == '.') {
      ++pos_;
      if (digits() == 0) return Error("digits after the decimal point");
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++pos_;
      if (Peek() == '+' || Peek() == '-') ++pos_;
      if (digits() == 0) return Error("digits in the exponent");
    }
    if (out) {
      out->type = JsonValue::Type::kNumber;
      out->number = std::strtod(std::string(s_.substr(start, pos_ - start)).c_str(), nullptr);
      // strtod turns 1e400 into infinity, which no caller can use as a size or a weight: an error
      // here names the offset instead of an "inf" surfacing later. (Skipped values are only
      // checked for syntax; the hot path of ExtractJsonStringField never converts them.)
      if (std::isinf(out->number)) {
        const std::string_view text = s_.substr(start, std::min<size_t>(pos_ - start, 32));
        return absl::InvalidArgumentError(absl::StrCat(
            "JSON number at byte offset ", start, " ('", AbslView(text), pos_ - start > 32 ? "..." : "",
            "') is outside the range of a double (about 1.8e308)"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Array(JsonValue* out, int depth) {
    ++pos_;  // '['
    if (out) out->type = JsonValue::Type::kArray;
    SkipSpace();
    if (Peek() == ']') {
      ++pos_;
      return absl::OkStatus();
    }
    while (true) {
      JsonValue* element = nullptr;
      if (out) element = &out->array.emplace_back();
      TS_RETURN_IF_ERROR(Value(element, depth + 1));
      SkipSpace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == ']') {
        ++pos_;
        return absl::OkStatus();
      }
      return Error("',' or ']' in an array");
    }
  }

 public:
  // Parses an object. When `key` is non-empty (the field-extraction mode) member values are
  // skipped except those named `key`, whose last occurrence is described by *field / *value.
  absl::Status Object(JsonValue* out, int depth, std::string_view key = {}, JsonField* field = nullptr,
                      std::string* value = nullptr) {
    if (Peek() != '{') return Error("'{' (each line must be a JSON object)");
    ++pos_;
    if (out) out->type = JsonValue::Type::kObject;
    SkipSpace();
    if (Peek() == '}') {
      ++pos_;
      return absl::OkStatus();
    }
    std::string name;
    while (true) {
      SkipSpace();
      TS_RETURN_IF_ERROR(String(&name));
      SkipSpace();
      if (Peek() != ':') return Error("':' after a member name");
      ++pos_;
      if (field != nullptr) {
        SkipSpace();
        if (name == key) {
          if (Peek() == '"') {
            TS_RETURN_IF_ERROR(String(value));
            *field = JsonField::kFound;
          } else {
            TS_RETURN_IF_ERROR(Value(nullptr, depth + 1));
            *field = JsonField::kNotString;
          }
        } else {
          TS_RETURN_IF_ERROR(Value(nullptr, depth + 1));
        }
      } else {
        JsonValue* member = nullptr;
        if (out) {
          out->object.emplace_back(name, JsonValue());
          member = &out->object.back().second;
        }
        TS_RETURN_IF_ERROR(Value(member, depth + 1));
      }
      SkipSpace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == '}') {
        ++pos_;
        return absl::OkStatus();
      }
      return Error("',' or '}' in an object");
    }
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

absl::Status CheckUtf8(std::string_view text) {
  const size_t bad = FindInvalidUtf8(text);
  if (bad == std::string_view::npos) return absl::OkStatus();
  return absl::InvalidArgumentError(DescribeInvalidUtf8(text, bad));
}

}  // namespace

const JsonValue* JsonValue::Find(std::string_view key) const {
  const JsonValue* found = nullptr;
  for (const auto& [name, value] : object) {
    if (name == key) found = &value;
  }
  return found;
}

absl::StatusOr<JsonValue> ParseJson(std::string_view text) {
  TS_RETURN_IF_ERROR(CheckUtf8(text));
  Parser parser(text);
  JsonValue value;
  TS_RETURN_IF_ERROR(parser.Value(&value, 0));
  parser.SkipSpace();
  if (!parser.AtEnd()) return parser.Error("end of input after the value");
  return value;
}

absl::StatusOr<JsonField> ExtractJsonStringField(std::string_view text, std::string_view key,
                                                 std::string* value) {
  TS_RETURN_IF_ERROR(CheckUtf8(text));
  Parser parser(text);
  JsonField field = JsonField::kMissing;
  parser.SkipSpace();
  TS_RETURN_IF_ERROR(parser.Object(nullptr, 0, key, &field, value));
  parser.SkipSpace();
  if (!parser.AtEnd()) return parser.Error("end of line after the object");
  return field;
}

}  // namespace tessera
