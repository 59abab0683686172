// BPE encoding and decoding, rank-file loading, and the named encodings.
//
// Exactness notes (each is a place where a naive port would differ from tiktoken):
// - tiktoken's regex engine (Rust's regex/fancy-regex) defines `\s` as Unicode White_Space.
//   PCRE2 in UCP mode also matches U+180E MONGOLIAN VOWEL SEPARATOR (it is in PCRE2's \h list
//   but has not been White_Space since Unicode 6.3), so `\s`/`\S` are rewritten to an explicit
//   White_Space class before compiling.
// - tiktoken 0.14's engine has Unicode 16.0 tables; Debian 12's PCRE2 has Unicode 14.0, so
//   \p{L} alone would miss some 9000 letters added since (CJK extensions H and I, Egyptian
//   hieroglyphs, Garay, ...). \p{L}, \p{N}, \p{M} and their subcategories are rewritten with
//   the generated tables of data/unicode_tables.inc (see scripts/dev/gen_unicode_tables.py).
//   Long range lists are slow in PCRE2, so two regexes are compiled: one with PCRE2's own
//   classes, used for text that holds no code point whose category differs between the two
//   Unicode versions (nearly all text), and the corrected one for the rest.
// - Text that the pattern does not match is skipped, as tiktoken's find_iter does.
// - Merging picks the lowest rank and, among equal ranks, the leftmost pair (tiktoken's
//   _byte_pair_merge uses a strict `<` scan).
#include "data/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <queue>
#include <unordered_map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/absl_string_view.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/status_macros.h"
#include "core/utf8.h"

namespace tessera::data {

// The patterns as FORMATS.md and tiktoken give them (cl100k: tiktoken's original form, which
// Meta's Llama 3 tokenizer.py also uses).
const char kCl100kPattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kO200kPattern[] =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

constexpr uint32_t kNoRank = 0xFFFFFFFFu;
// Pieces up to this many bytes use tiktoken's quadratic scan on a stack buffer; longer ones
// (long words, digit-free symbol runs) use a heap so that a 1 MB word is not O(n^2).
constexpr size_t kShortPiece = 128;

// Unicode White_Space (PropList.txt): what `\s` means to tiktoken's engine.
constexpr char kWhiteSpaceBody[] =
    R"(\t-\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";

// General categories at the Unicode version of tiktoken's regex engine (generated).
struct CategoryRanges {
  const char* name;
  const char* body;
};
struct CategoryDelta {
  const char* pcre2_version;
  const char* name;
  const char* added;
  const char* removed;
};
#include "data/unicode_tables.inc"

enum class ClassMode {
  kExact,   // \p{X} means X at kTableUnicodeVersion, always
  kNative,  // \p{X} is PCRE2's own (fast); exact only for text without divergent code points
};

const std::string& Pcre2UnicodeVersion() {
  static const std::string version = [] {
    char buffer[64] = {};
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, buffer);
    return std::string(buffer);
  }();
  return version;
}

// Parses a generated class body of `\x{a}` and `\x{a}-\x{b}` items into ranges.
void AppendRanges(std::string_view body, std::vector<std::pair<uint32_t, uint32_t>>* out) {
  auto number = [&](size_t* pos) {
    uint32_t v = 0;
    *pos += 3;  // "\x{"
    while (*pos < body.size() && body[*pos] != '}') {
      const char c = body[(*pos)++];
      v = v * 16 + static_cast<uint32_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    ++*pos;  // '}'
    return v;
  };
  size_t pos = 0;
  while (pos < body.size()) {
    const uint32_t a = number(&pos);
    uint32_t b = a;
    if (pos < body.size() && body[pos] == '-') {
      ++pos;
      b = number(&pos);
    }
    out->emplace_back(a, b);
  }
}

// The class body (the part inside [...]) for \p{name} in `mode`, or nullopt for a property the
// tables do not cover (left to PCRE2). PCRE2's own \p{..} is much faster than a long range list,
// so kExact uses it plus the code points added since PCRE2's Unicode version when the generated
// deltas cover that version, and the full range list otherwise. In kNative mode, the code points
// where PCRE2's class differs from the table go to *divergent; *unknown is set when they are not
// known (a PCRE2 with a Unicode version the tables do not list).
std::optional<std::string> CategoryClassBody(std::string_view name, ClassMode mode,
                                             std::vector<std::pair<uint32_t, uint32_t>>* divergent,
                                             bool* unknown) {
  const CategoryRanges* full = nullptr;
  for (const CategoryRanges& c : kCategories) {
    if (name == c.name) full = &c;
  }
  if (full == nullptr) return std::nullopt;
  const std::string native = absl::StrCat("\\p{", AbslView(name), "}");
  const std::string& version = Pcre2UnicodeVersion();
  if (version == kTableUnicodeVersion) return native;
  const CategoryDelta* delta = nullptr;
  for (const CategoryDelta& d : kCategoryDeltas) {
    if (version == d.pcre2_version && name == d.name) delta = &d;
  }
  if (mode == ClassMode::kNative) {
    if (delta == nullptr) {
      *unknown = true;
    } else {
      AppendRanges(delta->added, divergent);
      AppendRanges(delta->removed, divergent);
    }
    return native;
  }
  if (delta != nullptr && delta->removed[0] == '\0') return absl::StrCat(native, delta->added);
  return std::string(full->body);
}

// Rewrites `\s`, `\S` and `\p{..}`/`\P{..}` of the general categories in kCategories into explicit
// classes, so that matching does not depend on the Unicode tables of the system's PCRE2.
absl::StatusOr<std::string> RewritePatternClasses(std::string_view pattern, ClassMode mode,
                                                  std::vector<std::pair<uint32_t, uint32_t>>* divergent,
                                                  bool* unknown) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      std::optional<std::string> body;
      bool negated = false;
      size_t consumed = 0;
      if (e == 's' || e == 'S') {
        body = kWhiteSpaceBody;
        negated = e == 'S';
      } else if ((e == 'p' || e == 'P') && i + 1 < pattern.size() && pattern[i + 1] == '{') {
        const size_t close = pattern.find('}', i + 2);
        if (close != std::string_view::npos) {
          body = CategoryClassBody(pattern.substr(i + 2, close - i - 2), mode, divergent, unknown);
          negated = e == 'P';
          consumed = close - i;
        }
      }
      if (!body) {
        out.push_back('\\');
        out.push_back(e);
        continue;
      }
      i += consumed;
      if (in_class) {
        if (negated) {
          return absl::InvalidArgumentError(
              absl::StrCat("split pattern: a negated class escape (\\S, \\P{..}) inside [...] is not "
                           "supported (at offset ",
                           i, ")"));
        }
        out += *body;
      } else {
        out += absl::StrCat(negated ? "[^" : "[", *body, "]");
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

std::atomic<uint64_t> next_serial{1};

// A fast hash for short byte strings (tokens average a few bytes): 8-byte words folded with
// multiply-xorshift, then the SplitMix64 finalizer.
inline uint64_t HashBytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull * (n + 1);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
  }
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

std::string Shorten(std::string_view s, size_t n = 60) {
  std::string out(s.substr(0, n));
  if (s.size() > n) out += "...";
  return absl::CHexEscape(out);
}

bool IsBase64(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return false;
  size_t pad = 0;
  while (pad < 2 && s[s.size() - 1 - pad] == '=') ++pad;
  for (size_t i = 0; i + pad < s.size(); ++i) {
    const char c = s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '/')) {
      return false;
    }
  }
  return true;
}

std::string JsonEscape(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  return out + "\"";
}

TokenizerSpec Llama3Spec() {
  TokenizerSpec spec;
  spec.name = "llama3";
  spec.pattern = kCl100kPattern;
  spec.expected_ranks = 128000;
  // Meta's tokenizer.py: 256 specials from id 128000; reserved names fill the gaps.
  std::vector<std::string> names = {"<|begin_of_text|>",
                                    "<|end_of_text|>",
                                    "<|reserved_special_token_0|>",
                                    "<|reserved_special_token_1|>",
                                    "<|reserved_special_token_2|>",
                                    "<|reserved_special_token_3|>",
                                    "<|start_header_id|>",
                                    "<|end_header_id|>",
                                    "<|reserved_special_token_4|>",
                                    "<|eot_id|>"};
  for (int i = 5; i < 256 - 5; ++i) names.push_back(absl::StrCat("<|reserved_special_token_", i, "|>"));
  for (size_t i = 0; i < names.size(); ++i)
    spec.specials.emplace_back(names[i], 128000 + static_cast<int32_t>(i));
  spec.eod = "<|end_of_text|>";
  spec.bos = "<|begin_of_text|>";
  return spec;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Named encodings

std::vector<std::string> KnownTokenizerNames() { return {"cl100k_base", "o200k_base", "llama3"}; }

absl::StatusOr<TokenizerSpec> NamedTokenizerSpec(std::string_view name) {
  TokenizerSpec spec;
  spec.name = std::string(name);
  if (name == "cl100k_base") {
    spec.pattern = kCl100kPattern;
    spec.specials = {{"<|endoftext|>", 100257},
                     {"<|fim_prefix|>", 100258},
                     {"<|fim_middle|>", 100259},
                     {"<|fim_suffix|>", 100260},
                     {"<|endofprompt|>", 100276}};
    spec.eod = "<|endoftext|>";
    spec.expected_ranks = 100256;
    return spec;
  }
  if (name == "o200k_base") {
    spec.pattern = kO200kPattern;
    spec.specials = {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}};
    spec.eod = "<|endoftext|>";
    spec.expected_ranks = 199998;
    return spec;
  }
  if (name == "llama3") return Llama3Spec();
  return absl::NotFoundError(absl::StrCat("unknown tokenizer '", AbslView(name),
                                          "' (known: ", absl::StrJoin(KnownTokenizerNames(), ", "),
                                          ", or the path of a tiktoken-format rank file)"));
}

// ---------------------------------------------------------------------------------------------
// Rank files

absl::StatusOr<std::vector<std::string>> LoadTiktokenRanks(const std::string& path) {
  TS_ASSIGN_OR_RETURN(std::string contents, ReadFileToString(path));
  struct Entry {
    std::string bytes;
    int64_t rank;
    int64_t line;
  };
  std::vector<Entry> entries;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == std::string::npos) end = contents.size();
    std::string_view line(contents.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;  // tiktoken skips blank lines
    const size_t space = line.find(' ');
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", what, " (the line is '",
                                                     Shorten(line),
                                                     "'; a tiktoken rank file has lines 'BASE64 RANK')"));
    };
    if (space == std::string_view::npos) return bad("expected two fields separated by a space");
    const std::string_view b64 = line.substr(0, space);
    const std::string_view rank_text = line.substr(space + 1);
    if (!IsBase64(b64)) return bad("the token is not base64");
    if (rank_text.empty() || rank_text.size() > 10 ||
        !std::all_of(rank_text.begin(), rank_text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return bad("the rank is not a decimal number below 2^31");
    }
    const int64_t rank = std::stoll(std::string(rank_text));
    if (rank > 0x7FFFFFFF) return bad("the rank is not a decimal number below 2^31");
    std::string bytes;
    if (!absl::Base64Unescape(AbslView(b64), &bytes) || bytes.empty())
      return bad("the token is not valid base64 of a non-empty byte string");
    entries.push_back({std::move(bytes), rank, line_no});
  }
  if (entries.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens (empty rank file)"));
  const int64_t n = static_cast<int64_t>(entries.size());
  std::vector<int64_t> line_of_rank(n, 0);
  std::vector<std::string> tokens(n);
  absl::flat_hash_map<std::string_view, int64_t> line_of_token;
  line_of_token.reserve(n);
  for (Entry& e : entries) {
    if (e.rank >= n) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", e.line, ": rank ", e.rank,
                                                     " is out of range: a file of ", n,
                                                     " tokens must use each rank 0..", n - 1, " once"));
    }
    if (line_of_rank[e.rank] != 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", e.line, ": duplicate rank ", e.rank,
                                                     " (already given on line ", line_of_rank[e.rank], ")"));
    }
    line_of_rank[e.rank] = e.line;
    tokens[e.rank] = std::move(e.bytes);
  }
  for (int64_t r = 0; r < n; ++r) {
    auto [it, inserted] = line_of_token.emplace(tokens[r], line_of_rank[r]);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", std::max(it->second, line_of_rank[r]), ": duplicate token '",
                       Shorten(tokens[r]), "' (also on line ", std::min(it->second, line_of_rank[r]), ")"));
    }
  }
  return tokens;
}

absl::Status WriteTiktokenRanks(const std::string& path, const std::vector<std::string>& tokens) {
  std::string out;
  for (size_t r = 0; r < tokens.size(); ++r) {
    absl::StrAppend(&out, absl::Base64Escape(tokens[r]), " ", r, "\n");
  }
  return WriteFileAtomic(path, out);
}

std::string TokenizerMetadataJson(const TokenizerSpec& spec, int64_t num_ranks) {
  std::string out = "{\n";
  absl::StrAppend(&out, " \"name\": ", JsonEscape(spec.name), ",\n");
  absl::StrAppend(&out, " \"pat_str\": ", JsonEscape(spec.pattern), ",\n");
  out += " \"special_tokens\": {";
  for (size_t i = 0; i < spec.specials.size(); ++i) {
    absl::StrAppend(&out, i ? ",\n  " : "\n  ", JsonEscape(spec.specials[i].first), ": ",
                    spec.specials[i].second);
  }
  absl::StrAppend(&out, spec.specials.empty() ? "" : "\n ", "},\n");
  if (!spec.eod.empty()) absl::StrAppend(&out, " \"eod\": ", JsonEscape(spec.eod), ",\n");
  if (!spec.bos.empty()) absl::StrAppend(&out, " \"bos\": ", JsonEscape(spec.bos), ",\n");
  absl::StrAppend(&out, " \"n_ranks\": ", num_ranks, "\n}\n");
  return out;
}

// ---------------------------------------------------------------------------------------------
// The compiled pattern and per-thread match state

// The compiled split pattern. `exact` always gives tiktoken's splits; `fast` (when not null)
// uses PCRE2's own Unicode tables and gives the same splits for any text without a `divergent`
// code point (one whose category differs between PCRE2's Unicode version and the table's).
struct BpeTokenizer::Regex {
  pcre2_code* exact = nullptr;
  pcre2_code* fast = nullptr;
  bool exact_jit = false, fast_jit = false;
  std::vector<std::pair<uint32_t, uint32_t>> divergent;  // sorted, merged
  uint32_t min_divergent = 0;
  ~Regex() {
    if (exact) pcre2_code_free(exact);
    if (fast) pcre2_code_free(fast);
  }
  // True when `text` holds a code point on which `fast` and `exact` may disagree.
  bool NeedsExact(std::string_view text) const {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    for (size_t i = 0; i < n;) {
      if (i + 8 <= n) {
        uint64_t word;
        std::memcpy(&word, s + i, 8);
        if ((word & 0x8080808080808080ull) == 0) {
          i += 8;
          continue;
        }
      }
      const unsigned char c = s[i];
      if (c < 0x80) {
        ++i;
        continue;
      }
      uint32_t cp;
      size_t len;
      if (c < 0xE0) {
        cp = (c & 0x1Fu) << 6 | (s[i + 1] & 0x3Fu);
        len = 2;
      } else if (c < 0xF0) {
        cp = (c & 0x0Fu) << 12 | (s[i + 1] & 0x3Fu) << 6 | (s[i + 2] & 0x3Fu);
        len = 3;
      } else {
        cp = (c & 0x07u) << 18 | (s[i + 1] & 0x3Fu) << 12 | (s[i + 2] & 0x3Fu) << 6 | (s[i + 3] & 0x3Fu);
        len = 4;
      }
      i += len;
      if (cp < min_divergent) continue;
      auto it = std::upper_bound(divergent.begin(), divergent.end(), std::make_pair(cp, ~uint32_t{0}));
      if (it != divergent.begin() && std::prev(it)->second >= cp) return true;
    }
    return false;
  }
};

// PCRE2 match data and JIT stack are not shareable between threads; each thread keeps its own
// per tokenizer (keyed by serial, so a destroyed tokenizer's address being reused is harmless).
struct BpeTokenizer::Scratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  // Ids of recently merged pieces (words recur: identifiers in code, common words in prose), so
  // that a piece is merged once rather than each time it appears. Bounded; cleared when full.
  absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> piece_ids;  // -> (offset, count)
  std::vector<int32_t> cached_ids;
  ~Scratch() {
    if (data) pcre2_match_data_free(data);
    if (context) pcre2_match_context_free(context);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(std::vector<std::string> tokens,
                                                                   TokenizerSpec spec, std::string source) {
  if (source.empty()) source = spec.name;
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(source, ": the vocabulary is empty"));
  if (spec.expected_ranks != 0 && n != spec.expected_ranks) {
    return absl::InvalidArgumentError(absl::StrCat(source, " has ", n, " ranks but ", spec.name,
                                                   "'s rank file has ", spec.expected_ranks,
                                                   ": is it the right file for this encoding?"));
  }
  if (n >= (int64_t{1} << 31) - 1)
    return absl::InvalidArgumentError(absl::StrCat(source, ": too many ranks"));
  size_t total = 0;
  for (const std::string& tok : tokens) total += tok.size();
  if (total >= 0xFFFFFFFFu)
    return absl::InvalidArgumentError(absl::StrCat(source, ": token bytes exceed 4 GiB"));
  t->arena_.reserve(total);
  t->offsets_.reserve(n + 1);
  for (const std::string& tok : tokens) {
    t->offsets_.push_back(static_cast<uint32_t>(t->arena_.size()));
    t->arena_ += tok;
  }
  t->offsets_.push_back(static_cast<uint32_t>(t->arena_.size()));
  size_t capacity = 1024;
  while (capacity < static_cast<size_t>(n) * 2) capacity *= 2;  // load factor <= 1/2
  t->slots_.assign(capacity, Slot());
  t->slot_mask_ = capacity - 1;
  t->pair_rank_.assign(65536, -1);
  std::fill(std::begin(t->byte_rank_), std::end(t->byte_rank_), -1);
  for (int32_t r = 0; r < n; ++r) {
    const std::string_view bytes = t->TokenBytes(r);
    if (bytes.empty())
      return absl::InvalidArgumentError(absl::StrCat(source, ": rank ", r, " is an empty token"));
    if (bytes.size() > 0xFFFF) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": rank ", r, " is a token of ", bytes.size(),
                                                     " bytes; at most 65535 are supported"));
    }
    if (!t->Insert(bytes, r)) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": token '", Shorten(bytes), "' has two ranks"));
    }
    const auto* u = reinterpret_cast<const unsigned char*>(bytes.data());
    if (bytes.size() == 1) t->byte_rank_[u[0]] = r;
    if (bytes.size() == 2) t->pair_rank_[u[0] << 8 | u[1]] = r;
  }
  for (int b = 0; b < 256; ++b) {
    if (t->byte_rank_[b] < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: the single byte 0x%02x is not a token; a byte-level BPE vocabulary needs all "
                          "256 bytes so that "
                          "any text can be encoded",
                          source, b));
    }
  }
  t->vocab_size_ = static_cast<int32_t>(n);
  for (const auto& [text, id] : spec.specials) {
    if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": a special token is empty"));
    if (id < n) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": special token ", text, " has id ", id,
                                                     ", which is a rank of the file (ranks 0..", n - 1, ")"));
    }
    if (!t->special_ids_.emplace(text, id).second || !t->special_text_.emplace(id, text).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": special token ", text, " or its id ", id, " is given twice"));
    }
    t->vocab_size_ = std::max(t->vocab_size_, id + 1);
    if (std::find(t->special_lengths_.begin(), t->special_lengths_.end(), text.size()) ==
        t->special_lengths_.end()) {
      t->special_lengths_.push_back(text.size());
    }
  }
  std::sort(t->special_lengths_.rbegin(), t->special_lengths_.rend());
  for (const std::string* name : {&spec.eod, &spec.bos}) {
    if (!name->empty() && !t->special_ids_.contains(*name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": '", *name, "' is not one of the special tokens"));
    }
  }

  std::vector<std::pair<uint32_t, uint32_t>> divergent;
  bool unknown = false;
  TS_ASSIGN_OR_RETURN(std::string exact_pattern,
                      RewritePatternClasses(spec.pattern, ClassMode::kExact, &divergent, &unknown));
  TS_ASSIGN_OR_RETURN(std::string fast_pattern,
                      RewritePatternClasses(spec.pattern, ClassMode::kNative, &divergent, &unknown));
  auto compile = [&](const std::string& pattern, pcre2_code** code, bool* jit) -> absl::Status {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    *code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                          &error, &error_offset, nullptr);
    if (*code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": the split pattern does not compile (PCRE2: ", reinterpret_cast<const char*>(message),
          " at offset ", error_offset, " of '", spec.pattern, "')"));
    }
    // Without JIT (an exotic platform) the interpreter gives the same matches, only slower.
    *jit = pcre2_jit_compile(*code, PCRE2_JIT_COMPLETE) == 0;
    return absl::OkStatus();
  };
  t->regex_ = std::make_unique<Regex>();
  TS_RETURN_IF_ERROR(compile(exact_pattern, &t->regex_->exact, &t->regex_->exact_jit));
  if (!unknown && fast_pattern != exact_pattern) {
    TS_RETURN_IF_ERROR(compile(fast_pattern, &t->regex_->fast, &t->regex_->fast_jit));
    std::sort(divergent.begin(), divergent.end());
    for (const auto& r : divergent) {
      auto& d = t->regex_->divergent;
      if (!d.empty() && r.first <= d.back().second + 1) {
        d.back().second = std::max(d.back().second, r.second);
      } else {
        d.push_back(r);
      }
    }
    t->regex_->min_divergent =
        t->regex_->divergent.empty() ? ~uint32_t{0} : t->regex_->divergent.front().first;
  }
  t->spec_ = std::move(spec);
  t->source_ = std::move(source);
  t->serial_ = next_serial.fetch_add(1);
  return t;
}

namespace {
// Most tokens are a few bytes: a byte loop beats a call to memcmp for them.
inline bool SameBytes(const char* a, const char* b, size_t n) {
  if (n > 16) return std::memcmp(a, b, n) == 0;
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}
}  // namespace

namespace {
inline uint64_t Prefix8(const char* bytes, size_t size) {
  uint64_t v = 0;
  std::memcpy(&v, bytes, size < 8 ? size : 8);
  return v;
}
}  // namespace

int32_t BpeTokenizer::Lookup(const char* bytes, size_t size) const {
  const uint64_t h = HashBytes(bytes, size);
  const uint16_t tag = static_cast<uint16_t>(h >> 48);
  const uint64_t prefix = Prefix8(bytes, size);
  for (uint64_t i = h & slot_mask_;; i = (i + 1) & slot_mask_) {
    const Slot& slot = slots_[i];
    if (slot.rank < 0) return -1;
    if (slot.tag == tag && slot.length == size && slot.prefix == prefix &&
        (size <= 8 || SameBytes(arena_.data() + offsets_[slot.rank] + 8, bytes + 8, size - 8))) {
      return slot.rank;
    }
  }
}

bool BpeTokenizer::Insert(std::string_view bytes, int32_t rank) {
  if (bytes.size() > 0xFFFF) return false;  // no real token is 64 KiB long
  if (Lookup(bytes.data(), bytes.size()) >= 0) return false;
  const uint64_t h = HashBytes(bytes.data(), bytes.size());
  uint64_t i = h & slot_mask_;
  while (slots_[i].rank >= 0) i = (i + 1) & slot_mask_;
  slots_[i] = Slot{Prefix8(bytes.data(), bytes.size()), rank, static_cast<uint16_t>(bytes.size()),
                   static_cast<uint16_t>(h >> 48)};
  return true;
}

std::optional<int32_t> BpeTokenizer::SpecialId(std::string_view text) const {
  if (text.empty()) return std::nullopt;
  auto it = special_ids_.find(AbslView(text));
  if (it == special_ids_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> BpeTokenizer::Rank(std::string_view bytes) const {
  const int32_t r = Lookup(bytes.data(), bytes.size());
  if (r < 0) return std::nullopt;
  return r;
}

BpeTokenizer::Scratch* BpeTokenizer::ThreadScratch() const {
  // Per-thread state per tokenizer; more than a few live tokenizers per thread is unusual, so
  // the map is simply cleared when it grows.
  thread_local std::unordered_map<uint64_t, std::unique_ptr<Scratch>> scratch_by_tokenizer;
  if (scratch_by_tokenizer.size() > 16 && !scratch_by_tokenizer.contains(serial_))
    scratch_by_tokenizer.clear();
  std::unique_ptr<Scratch>& slot = scratch_by_tokenizer[serial_];
  if (!slot) {
    slot = std::make_unique<Scratch>();
    slot->data = pcre2_match_data_create_from_pattern(regex_->exact, nullptr);
    slot->context = pcre2_match_context_create(nullptr);
    // Generous JIT stack: whitespace runs of megabytes backtrack through `\s+(?!\S)`.
    slot->stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
    if (!slot->data || !slot->context || !slot->stack) {
      slot.reset();
      return nullptr;
    }
    pcre2_jit_stack_assign(slot->context, nullptr, slot->stack);
  }
  return slot.get();
}

absl::Status BpeTokenizer::ForEachMatch(std::string_view text, void (*fn)(void*, std::string_view),
                                        void* arg) const {
  Scratch* scratch = ThreadScratch();
  if (scratch == nullptr) return absl::ResourceExhaustedError("cannot allocate PCRE2 match state");
  Scratch& s = *scratch;
  const bool use_fast = regex_->fast != nullptr && !regex_->NeedsExact(text);
  pcre2_code* code = use_fast ? regex_->fast : regex_->exact;
  const bool jit = use_fast ? regex_->fast_jit : regex_->exact_jit;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.empty() ? "" : text.data());
  const PCRE2_SIZE length = text.size();
  PCRE2_SIZE start = 0;
  while (start < length) {
    const int rc = jit ? pcre2_jit_match(code, subject, length, start, 0, s.data, s.context)
                       : pcre2_match(code, subject, length, start, PCRE2_NO_UTF_CHECK, s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(absl::StrCat("splitting text with the pattern of ", source_,
                                                       " failed at byte offset ", start, ": ",
                                                       reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    const PCRE2_SIZE b = ov[0], e = ov[1];
    if (e <= b) {
      // An empty match covers nothing; step over one character as find_iter does.
      PCRE2_SIZE next = b + 1;
      while (next < length && (static_cast<unsigned char>(text[next]) & 0xC0) == 0x80) ++next;
      start = next;
      continue;
    }
    fn(arg, text.substr(b, e - b));
    start = e;
  }
  return absl::OkStatus();
}

void BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* out, Scratch* cache) const {
  const auto* u = reinterpret_cast<const unsigned char*>(piece.data());
  const size_t n = piece.size();
  if (n == 1) {
    out->push_back(byte_rank_[u[0]]);
    return;
  }
  if (n == 2) {
    const int32_t r = pair_rank_[u[0] << 8 | u[1]];
    if (r >= 0) {
      out->push_back(r);
    } else {
      out->push_back(byte_rank_[u[0]]);
      out->push_back(byte_rank_[u[1]]);
    }
    return;
  }
  if (const int32_t r = Lookup(piece.data(), n); r >= 0) {
    out->push_back(r);
    return;
  }
  if (n > kShortPiece) {
    MergeSlow(piece, out);
    return;
  }
  if (cache != nullptr) {
    if (auto it = cache->piece_ids.find(AbslView(piece)); it != cache->piece_ids.end()) {
      const int32_t* ids = cache->cached_ids.data() + it->second.first;
      out->insert(out->end(), ids, ids + it->second.second);
      return;
    }
  }
  const size_t first_out = out->size();
  auto rank_of = [&](size_t begin, size_t end) -> uint32_t {
    if (end - begin == 2) {
      const int32_t r = pair_rank_[u[begin] << 8 | u[begin + 1]];
      return r < 0 ? kNoRank : static_cast<uint32_t>(r);
    }
    const int32_t r = Lookup(piece.data() + begin, end - begin);
    return r < 0 ? kNoRank : static_cast<uint32_t>(r);
  };
  // parts[i] = (start of part i, rank of the merge of parts i and i+1), as in tiktoken.
  uint32_t start[kShortPiece + 2];
  uint32_t rank[kShortPiece + 2];
  size_t count = 0;
  uint32_t min_rank = kNoRank;
  size_t min_at = 0;
  for (size_t i = 0; i + 1 < n; ++i) {
    start[count] = static_cast<uint32_t>(i);
    rank[count] = rank_of(i, i + 2);
    if (rank[count] < min_rank) {
      min_rank = rank[count];
      min_at = count;
    }
    ++count;
  }
  start[count] = static_cast<uint32_t>(n - 1);
  rank[count++] = kNoRank;
  start[count] = static_cast<uint32_t>(n);
  rank[count++] = kNoRank;
  while (min_rank != kNoRank) {
    const size_t i = min_at;
    // Ranks of the pairs that the merge of parts i and i+1 creates; part i+1 then goes.
    if (i > 0) rank[i - 1] = i + 2 < count ? rank_of(start[i - 1], start[i + 2]) : kNoRank;
    rank[i] = i + 3 < count ? rank_of(start[i], start[i + 3]) : kNoRank;
    std::memmove(start + i + 1, start + i + 2, (count - i - 2) * sizeof(uint32_t));
    std::memmove(rank + i + 1, rank + i + 2, (count - i - 2) * sizeof(uint32_t));
    --count;
    min_rank = kNoRank;
    for (size_t k = 0; k + 1 < count; ++k) {
      if (rank[k] < min_rank) {
        min_rank = rank[k];
        min_at = k;
      }
    }
  }
  for (size_t k = 0; k + 1 < count; ++k) {
    const uint32_t r = rank_of(start[k], start[k + 1]);
    out->push_back(static_cast<int32_t>(r));
  }
  if (cache != nullptr) {
    if (cache->piece_ids.size() >= (1 << 16)) {
      cache->piece_ids.clear();
      cache->cached_ids.clear();
    }
    const uint32_t offset = static_cast<uint32_t>(cache->cached_ids.size());
    cache->cached_ids.insert(cache->cached_ids.end(), out->begin() + first_out, out->end());
    cache->piece_ids.emplace(std::string(piece),
                             std::make_pair(offset, static_cast<uint32_t>(out->size() - first_out)));
  }
}

void BpeTokenizer::MergeSlow(std::string_view piece, std::vector<int32_t>* out) const {
  // Same result as the scan: symbols in a linked list, candidate merges in a min-heap ordered by
  // (rank, start); an entry is stale when its two symbols have changed since it was pushed.
  const size_t n = piece.size();
  struct Symbol {
    uint32_t begin, end;
    int32_t prev, next;
  };
  std::vector<Symbol> sym(n);
  for (size_t i = 0; i < n; ++i) {
    sym[i] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1), static_cast<int32_t>(i) - 1,
              i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  }
  struct Candidate {
    uint32_t rank, begin, mid, end;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : begin > o.begin; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t left) {
    if (left < 0 || sym[left].next < 0) return;
    const Symbol& a = sym[left];
    const Symbol& b = sym[a.next];
    const int32_t r = Lookup(piece.data() + a.begin, b.end - a.begin);
    if (r >= 0) heap.push({static_cast<uint32_t>(r), a.begin, a.end, b.end});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  // Symbols are indexed by their first byte, which never changes for a live symbol.
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t left = static_cast<int32_t>(c.begin);
    if (!alive[left] || sym[left].end != c.mid || sym[left].next < 0 || sym[sym[left].next].end != c.end)
      continue;
    const int32_t right = sym[left].next;
    sym[left].end = sym[right].end;
    sym[left].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = left;
    alive[right] = 0;
    push(sym[left].prev);
    push(left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    out->push_back(Lookup(piece.data() + sym[i].begin, sym[i].end - sym[i].begin));
  }
}

absl::Status BpeTokenizer::EncodeChecked(std::string_view text, std::vector<int32_t>* out) const {
  Scratch* cache = ThreadScratch();  // null only when out of memory: then merge without a cache
  auto encode = [this, out, cache](std::string_view piece) { EncodePiece(piece, out, cache); };
  return Split(text, encode);
}

absl::Status BpeTokenizer::EncodeOrdinary(std::string_view text, std::vector<int32_t>* out) const {
  const size_t bad = FindInvalidUtf8(text);
  if (bad != std::string_view::npos) return absl::InvalidArgumentError(DescribeInvalidUtf8(text, bad));
  return EncodeChecked(text, out);
}

absl::Status BpeTokenizer::EncodeWithSpecials(std::string_view text, std::vector<int32_t>* out) const {
  const size_t bad = FindInvalidUtf8(text);
  if (bad != std::string_view::npos) return absl::InvalidArgumentError(DescribeInvalidUtf8(text, bad));
  if (special_ids_.empty()) return EncodeChecked(text, out);
  bool first_byte[256] = {};
  for (const auto& [special, id] : special_ids_) first_byte[static_cast<unsigned char>(special[0])] = true;
  size_t segment = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!first_byte[static_cast<unsigned char>(text[i])]) continue;
    for (size_t len : special_lengths_) {  // longest first
      if (i + len > text.size()) continue;
      auto it = special_ids_.find(AbslView(text.substr(i, len)));
      if (it == special_ids_.end()) continue;
      TS_RETURN_IF_ERROR(EncodeChecked(text.substr(segment, i - segment), out));
      out->push_back(it->second);
      segment = i + len;
      i = segment - 1;
      break;
    }
  }
  return EncodeChecked(text.substr(segment), out);
}

absl::StatusOr<std::string> BpeTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && id < num_ranks()) {
      text.append(TokenBytes(id).data(), TokenBytes(id).size());
      continue;
    }
    auto it = special_text_.find(id);
    if (it == special_text_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("id ", id, " (position ", i, ") is not in the vocabulary of ", source_, ": ranks 0..",
                       num_ranks() - 1, " and ", special_text_.size(), " special tokens"));
    }
    text.append(it->second);
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Loading by description

namespace {

bool IsKnownName(std::string_view name) {
  for (const std::string& known : KnownTokenizerNames()) {
    if (name == known) return true;
  }
  return false;
}

// The metadata file beside a rank file, if any.
std::string FindMetadataFile(const std::string& rank_file) {
  std::filesystem::path p(rank_file);
  std::vector<std::string> candidates;
  if (p.has_extension()) candidates.push_back(std::filesystem::path(p).replace_extension(".json").string());
  candidates.push_back(rank_file + ".json");
  for (const std::string& c : candidates) {
    if (c != rank_file && PathExists(c)) return c;
  }
  return "";
}

absl::StatusOr<TokenizerSpec> SpecFromMetadata(const std::string& path, int64_t num_ranks) {
  TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto json = ParseJson(text);
  if (!json.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", json.status().message()));
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", what,
        " (a tokenizer metadata file is a JSON object with \"pat_str\": string and \"special_tokens\": "
        "{name: id}, optionally \"name\", \"eod\", \"bos\")"));
  };
  if (json->type != JsonValue::Type::kObject) return bad("not a JSON object");
  TokenizerSpec spec;
  const JsonValue* pat = json->Find("pat_str");
  if (!pat || pat->type != JsonValue::Type::kString) return bad("\"pat_str\" is missing or not a string");
  spec.pattern = pat->string;
  if (const JsonValue* name = json->Find("name"); name && name->type == JsonValue::Type::kString) {
    spec.name = name->string;
  } else {
    spec.name = std::filesystem::path(path).stem().string();
  }
  if (const JsonValue* specials = json->Find("special_tokens")) {
    if (specials->type != JsonValue::Type::kObject) return bad("\"special_tokens\" is not an object");
    for (const auto& [name, id] : specials->object) {
      if (id.type != JsonValue::Type::kNumber || id.number < 0 || id.number > 0x7FFFFFFF ||
          id.number != static_cast<double>(static_cast<int64_t>(id.number))) {
        return bad(absl::StrCat("special token ", name, " has an id that is not a non-negative integer"));
      }
      spec.specials.emplace_back(name, static_cast<int32_t>(id.number));
    }
  }
  for (auto [key, field] : {std::pair<const char*, std::string*>{"eod", &spec.eod}, {"bos", &spec.bos}}) {
    if (const JsonValue* v = json->Find(key)) {
      if (v->type != JsonValue::Type::kString) return bad(absl::StrCat("\"", key, "\" is not a string"));
      *field = v->string;
    }
  }
  if (spec.eod.empty()) {
    for (const char* candidate : {"<|endoftext|>", "<|end_of_text|>"}) {
      for (const auto& [name, id] : spec.specials) {
        if (name == candidate && spec.eod.empty()) spec.eod = name;
      }
    }
  }
  if (const JsonValue* n = json->Find("n_ranks"); n && n->type == JsonValue::Type::kNumber) {
    if (n->number != static_cast<double>(num_ranks)) {
      return bad(absl::StrCat("\"n_ranks\" is ", n->number, " but the rank file has ", num_ranks, " ranks"));
    }
  }
  return spec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadTokenizer(std::string_view name_or_file,
                                                            std::string_view rank_file) {
  const std::string name(name_or_file);
  if (!rank_file.empty()) {
    if (!IsKnownName(name) && !name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a known tokenizer name (",
                                                     absl::StrJoin(KnownTokenizerNames(), ", "),
                                                     ") to pair with the rank file ", AbslView(rank_file)));
    }
    const std::string file(rank_file);
    auto tokens = LoadTiktokenRanks(file);
    if (!tokens.ok()) return tokens.status();
    if (name.empty()) return LoadTokenizer(file, "");
    TS_ASSIGN_OR_RETURN(TokenizerSpec spec, NamedTokenizerSpec(name));
    return BpeTokenizer::Create(*std::move(tokens), std::move(spec), file);
  }
  if (IsKnownName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer '", name,
                     "' needs its rank file, which is data you supply (Tessera ships no vocabularies): "
                     "give '",
                     name, ":PATH' (for example ",
                     name == "llama3" ? "llama3:/models/Llama-3-8B/tokenizer.model"
                                      : absl::StrCat(name, ":/data/", name, ".tiktoken"),
                     ")"));
  }
  if (name.empty()) return absl::InvalidArgumentError("no tokenizer given");
  if (!PathExists(name)) {
    return absl::NotFoundError(absl::StrCat("tokenizer '", name, "' is neither a known name (",
                                            absl::StrJoin(KnownTokenizerNames(), ", "),
                                            ", each as NAME:RANK_FILE) nor an existing rank file"));
  }
  TS_ASSIGN_OR_RETURN(std::vector<std::string> tokens, LoadTiktokenRanks(name));
  const std::string metadata = FindMetadataFile(name);
  TokenizerSpec spec;
  if (!metadata.empty()) {
    TS_ASSIGN_OR_RETURN(spec, SpecFromMetadata(metadata, static_cast<int64_t>(tokens.size())));
  } else if (tokens.size() == 128000) {
    spec = Llama3Spec();  // Meta's tokenizer.model carries no metadata; its size identifies it
  } else {
    spec.name = std::filesystem::path(name).stem().string();
    spec.pattern = kCl100kPattern;
    spec.specials = {{"<|endoftext|>", static_cast<int32_t>(tokens.size())}};
    spec.eod = "<|endoftext|>";
  }
  return BpeTokenizer::Create(std::move(tokens), std::move(spec), name);
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> LoadTokenizer(std::string_view description) {
  const size_t colon = description.find(':');
  if (colon != std::string_view::npos && IsKnownName(description.substr(0, colon))) {
    return LoadTokenizer(description.substr(0, colon), description.substr(colon + 1));
  }
  return LoadTokenizer(description, "");
}

}  // namespace tessera::data
