// Compiling and matching split patterns (split_pattern.h).
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
#include "data/split_pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "core/absl_string_view.h"
#include "core/status_macros.h"
#include "core/utf8.h"

namespace tessera::data {
namespace {

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

// Compiles `pattern` (the rewritten form of `original`); errors name `source` and `original`.
absl::Status CompilePcre2(const std::string& pattern, const std::string& original, const std::string& source,
                          pcre2_code** code, bool* jit) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  *code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                        &error, &error_offset, nullptr);
  if (*code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": the split pattern does not compile (PCRE2: ", reinterpret_cast<const char*>(message),
        " at offset ", error_offset, " of '", original, "')"));
  }
  // Without JIT (an exotic platform) the interpreter gives the same matches, only slower.
  *jit = pcre2_jit_compile(*code, PCRE2_JIT_COMPLETE) == 0;
  return absl::OkStatus();
}

// Sorts `ranges` and merges overlapping and adjacent ones.
std::vector<std::pair<uint32_t, uint32_t>> MergeRanges(std::vector<std::pair<uint32_t, uint32_t>> ranges) {
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint32_t, uint32_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

}  // namespace

// The compiled pattern. `exact` always gives tiktoken's splits; `fast` (when not null) uses
// PCRE2's own Unicode tables and gives the same splits for any text without a `divergent` code
// point (one whose category differs between PCRE2's Unicode version and the table's).
struct SplitPattern::Regex {
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
    const size_t n = text.size();
    for (size_t i = SkipAscii(text, 0); i < n; i = SkipAscii(text, i)) {
      const uint32_t cp = DecodeValidUtf8(text, &i);
      if (cp < min_divergent) continue;
      auto it = std::upper_bound(divergent.begin(), divergent.end(), std::make_pair(cp, ~uint32_t{0}));
      if (it != divergent.begin() && std::prev(it)->second >= cp) return true;
    }
    return false;
  }
};

// PCRE2 match data and JIT stack are not shareable between threads; each thread keeps its own
// per pattern (keyed by serial, so a destroyed pattern's address being reused is harmless).
struct SplitPattern::MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ~MatchState() {
    if (data) pcre2_match_data_free(data);
    if (context) pcre2_match_context_free(context);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

SplitPattern::~SplitPattern() = default;

absl::StatusOr<std::unique_ptr<SplitPattern>> SplitPattern::Compile(const std::string& pattern,
                                                                    const std::string& source) {
  std::vector<std::pair<uint32_t, uint32_t>> divergent;
  bool unknown = false;
  TS_ASSIGN_OR_RETURN(std::string exact_pattern,
                      RewritePatternClasses(pattern, ClassMode::kExact, &divergent, &unknown));
  TS_ASSIGN_OR_RETURN(std::string fast_pattern,
                      RewritePatternClasses(pattern, ClassMode::kNative, &divergent, &unknown));
  std::unique_ptr<SplitPattern> p(new SplitPattern());
  p->regex_ = std::make_unique<Regex>();
  Regex& r = *p->regex_;
  TS_RETURN_IF_ERROR(CompilePcre2(exact_pattern, pattern, source, &r.exact, &r.exact_jit));
  if (!unknown && fast_pattern != exact_pattern) {
    TS_RETURN_IF_ERROR(CompilePcre2(fast_pattern, pattern, source, &r.fast, &r.fast_jit));
    r.divergent = MergeRanges(std::move(divergent));
    r.min_divergent = r.divergent.empty() ? ~uint32_t{0} : r.divergent.front().first;
  }
  p->source_ = source;
  p->serial_ = next_serial.fetch_add(1);
  return p;
}

SplitPattern::MatchState* SplitPattern::ThreadMatchState() const {
  // Per-thread state per pattern; more than a few live patterns per thread is unusual, so the map
  // is simply cleared when it grows.
  thread_local std::unordered_map<uint64_t, std::unique_ptr<MatchState>> state_by_pattern;
  if (state_by_pattern.size() > 16 && !state_by_pattern.contains(serial_)) state_by_pattern.clear();
  std::unique_ptr<MatchState>& slot = state_by_pattern[serial_];
  if (!slot) {
    slot = std::make_unique<MatchState>();
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

absl::Status SplitPattern::ForEachMatch(std::string_view text, void (*fn)(void*, std::string_view),
                                        void* arg) const {
  MatchState* state = ThreadMatchState();
  if (state == nullptr) return absl::ResourceExhaustedError("cannot allocate PCRE2 match state");
  MatchState& s = *state;
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
      while (next < length && IsUtf8Continuation(static_cast<unsigned char>(text[next]))) ++next;
      start = next;
      continue;
    }
    fn(arg, text.substr(b, e - b));
    start = e;
  }
  return absl::OkStatus();
}

}  // namespace tessera::data
