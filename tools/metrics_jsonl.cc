// A small reader of flat JSON objects, written for metrics lines instead of reusing
// core/json.h because metrics carry NaN and Infinity, which strict JSON (and that reader) rejects.
#include "tools/metrics_jsonl.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/utf8.h"

namespace tessera {
namespace {

class LineParser {
 public:
  explicit LineParser(std::string_view text) : text_(text) {}

  absl::StatusOr<MetricsRecord> Parse() {
    MetricsRecord record;
    bool has_step = false;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{' (each line is one JSON object)");
    SkipSpace();
    if (!Consume('}')) {
      while (true) {
        SkipSpace();
        std::string key;
        if (absl::Status s = ParseString(&key); !s.ok()) return s;
        SkipSpace();
        if (!Consume(':')) return Error(absl::StrCat("expected ':' after \"", key, "\""));
        SkipSpace();
        const size_t value_at = pos_;
        std::optional<double> number;
        if (absl::Status s = ParseValue(&number); !s.ok()) return s;
        if (key == "step") {
          if (!number || !std::isfinite(*number) || std::floor(*number) != *number ||
              std::fabs(*number) > 9e15) {
            pos_ = value_at;
            return Error("\"step\" must be an integer");
          }
          record.step = static_cast<int64_t>(*number);
          has_step = true;
        } else if (number) {
          record.values[key] = *number;
        }
        SkipSpace();
        if (Consume('}')) break;
        if (!Consume(',')) return Error("expected ',' or '}'");
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the object");
    if (!has_step) return absl::InvalidArgumentError("no \"step\" member");
    return record;
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("column ", pos_ + 1, ": ", what));
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\r')) ++pos_;
  }
  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) return ++pos_, true;
    return false;
  }
  bool ConsumeWord(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  // A JSON string; escapes are decoded (\uXXXX to UTF-8, surrogate pairs combined).
  absl::Status ParseString(std::string* out) {
    if (!Consume('"')) return Error("expected a string");
    while (pos_ < text_.size()) {
      const char c = text_[pos_++];
      if (c == '"') return absl::OkStatus();
      if (static_cast<unsigned char>(c) < 0x20) return Error("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ == text_.size()) break;
      const char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (absl::Status s = ParseHex4(&cp); !s.ok()) return s;
          if (IsHighSurrogate(cp) && ConsumeWord("\\u")) {
            uint32_t low = 0;
            if (absl::Status s = ParseHex4(&low); !s.ok()) return s;
            if (!IsLowSurrogate(low)) return Error("invalid surrogate pair");
            cp = CombineSurrogates(cp, low);
          } else if (IsHighSurrogate(cp) || IsLowSurrogate(cp)) {
            return Error("lone surrogate in \\u escape");
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          --pos_;
          return Error(absl::StrCat("invalid escape '\\", std::string(1, e), "'"));
      }
    }
    return Error("unterminated string");
  }

  absl::Status ParseHex4(uint32_t* out) {
    if (pos_ + 4 > text_.size()) return Error("expected 4 hex digits after \\u");
    for (int i = 0; i < 4; ++i) {
      const char h = text_[pos_];
      int d = (h >= '0' && h <= '9')   ? h - '0'
              : (h >= 'a' && h <= 'f') ? h - 'a' + 10
              : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                       : -1;
      if (d < 0) return Error("expected 4 hex digits after \\u");
      *out = (*out << 4) | static_cast<uint32_t>(d);
      ++pos_;
    }
    return absl::OkStatus();
  }

  // Any JSON value; *number is set for numbers (and NaN/Infinity/-Infinity), else left empty.
  absl::Status ParseValue(std::optional<double>* number, int depth = 0) {
    if (depth > 64) return Error("values nested too deeply");
    if (pos_ == text_.size()) return Error("expected a value");
    const char c = text_[pos_];
    if (c == '"') {
      std::string ignored;
      return ParseString(&ignored);
    }
    if (ConsumeWord("true") || ConsumeWord("false") || ConsumeWord("null")) return absl::OkStatus();
    if (ConsumeWord("NaN")) return *number = std::numeric_limits<double>::quiet_NaN(), absl::OkStatus();
    if (ConsumeWord("Infinity")) return *number = std::numeric_limits<double>::infinity(), absl::OkStatus();
    if (ConsumeWord("-Infinity")) return *number = -std::numeric_limits<double>::infinity(), absl::OkStatus();
    if (c == '[' || c == '{') {
      const char close = c == '[' ? ']' : '}';
      ++pos_;
      SkipSpace();
      if (Consume(close)) return absl::OkStatus();
      while (true) {
        SkipSpace();
        if (c == '{') {
          std::string key;
          if (absl::Status s = ParseString(&key); !s.ok()) return s;
          SkipSpace();
          if (!Consume(':')) return Error("expected ':'");
          SkipSpace();
        }
        std::optional<double> ignored;
        if (absl::Status s = ParseValue(&ignored, depth + 1); !s.ok()) return s;
        SkipSpace();
        if (Consume(close)) return absl::OkStatus();
        if (!Consume(',')) return Error(absl::StrCat("expected ',' or '", std::string(1, close), "'"));
      }
    }
    // A JSON number: -?digits[.digits][e[+-]digits].
    const size_t start = pos_;
    Consume('-');
    const size_t digits_at = pos_;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    if (pos_ == digits_at) {
      pos_ = start;
      return Error("expected a value (number, string, true, false, null, NaN or Infinity)");
    }
    if (Consume('.')) {
      const size_t frac_at = pos_;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      if (pos_ == frac_at) return Error("expected digits after '.'");
    }
    if (Consume('e') || Consume('E')) {
      if (!Consume('+')) Consume('-');
      const size_t exp_at = pos_;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      if (pos_ == exp_at) return Error("expected digits in the exponent");
    }
    double value = 0;
    const char* first = text_.data() + start;
    auto [end, ec] = std::from_chars(first, text_.data() + pos_, value);
    if (ec == std::errc::result_out_of_range) {
      // JSON allows any magnitude; like Python's json, read it as +-inf or a tiny value/0.
      value = std::strtod(std::string(text_.substr(start, pos_ - start)).c_str(), nullptr);
    } else if (ec != std::errc() || end != text_.data() + pos_) {
      pos_ = start;
      return Error("malformed number");
    }
    *number = value;
    return absl::OkStatus();
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<MetricsRecord> ParseMetricsLine(std::string_view line) { return LineParser(line).Parse(); }

absl::StatusOr<MetricsLog> ReadMetricsJsonl(const std::string& path) {
  if (!PathExists(path)) return absl::NotFoundError(absl::StrCat("'", path, "' does not exist"));
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  MetricsLog log;
  std::string_view rest(*text);
  int64_t line_number = 0;
  while (!rest.empty()) {
    ++line_number;
    const size_t newline = rest.find('\n');
    const bool finished = newline != std::string_view::npos;
    const std::string_view line = rest.substr(0, finished ? newline : rest.size());
    rest.remove_prefix(finished ? newline + 1 : rest.size());
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    absl::StatusOr<MetricsRecord> record = ParseMetricsLine(line);
    if (!record.ok()) {
      if (!finished) {
        log.dropped_unfinished_last_line = true;
        break;
      }
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_number, ": ", record.status().message()));
    }
    log.records.push_back(*std::move(record));
  }
  return log;
}

}  // namespace tessera
