// Reading and writing tiktoken's rank files and the metadata files beside them
// (tiktoken_files.h).
#include "data/tiktoken_files.h"

#include <algorithm>
#include <filesystem>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/absl_string_view.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/json_text.h"
#include "core/status_macros.h"
#include "core/strings.h"

namespace tessera::data {
namespace {

// The longest token a rank file may hold. Real vocabularies stay below a few hundred bytes; the
// bound refuses a line that is one enormous "token" before it is decoded (BpeTokenizer itself
// stores token lengths in 16 bits).
constexpr size_t kMaxTokenBytes = 4096;

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

}  // namespace

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
                                                     EscapedExcerpt(line),
                                                     "'; a tiktoken rank file has lines 'BASE64 RANK')"));
    };
    if (space == std::string_view::npos) return bad("expected two fields separated by a space");
    const std::string_view b64 = line.substr(0, space);
    const std::string_view rank_text = line.substr(space + 1);
    // Base64 of kMaxTokenBytes bytes is at most 4 * ceil(kMaxTokenBytes / 3) characters.
    if (b64.size() > 4 * ((kMaxTokenBytes + 2) / 3)) {
      return bad(absl::StrCat("the token's base64 has ", b64.size(), " characters; tokens are at most ",
                              kMaxTokenBytes, " bytes"));
    }
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
    if (bytes.size() > kMaxTokenBytes) {
      return bad(absl::StrCat("the token has ", bytes.size(), " bytes; tokens are at most ", kMaxTokenBytes,
                              " bytes"));
    }
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
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", std::max(it->second, line_of_rank[r]), ": duplicate token '", EscapedExcerpt(tokens[r]),
          "' (also on line ", std::min(it->second, line_of_rank[r]), ")"));
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
  absl::StrAppend(&out, " \"name\": ", JsonQuote(spec.name), ",\n");
  absl::StrAppend(&out, " \"pat_str\": ", JsonQuote(spec.pattern), ",\n");
  out += " \"special_tokens\": {";
  for (size_t i = 0; i < spec.specials.size(); ++i) {
    absl::StrAppend(&out, i ? ",\n  " : "\n  ", JsonQuote(spec.specials[i].first), ": ",
                    spec.specials[i].second);
  }
  absl::StrAppend(&out, spec.specials.empty() ? "" : "\n ", "},\n");
  if (!spec.eod.empty()) absl::StrAppend(&out, " \"eod\": ", JsonQuote(spec.eod), ",\n");
  if (!spec.bos.empty()) absl::StrAppend(&out, " \"bos\": ", JsonQuote(spec.bos), ",\n");
  absl::StrAppend(&out, " \"n_ranks\": ", num_ranks, "\n}\n");
  return out;
}

absl::StatusOr<TokenizerSpec> ReadTokenizerMetadata(const std::string& path, int64_t num_ranks) {
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
    absl::flat_hash_set<std::string> names;
    absl::flat_hash_map<int32_t, std::string> ids;
    for (const auto& [name, id] : specials->object) {
      // Below INT32_MAX, not up to it: the vocabulary size is the largest id + 1, an int32 too.
      if (id.type != JsonValue::Type::kNumber || id.number < 0 || id.number >= 0x7FFFFFFF ||
          id.number != static_cast<double>(static_cast<int64_t>(id.number))) {
        return bad(absl::StrCat("special token ", name, " has an id that is not an integer in [0, ",
                                0x7FFFFFFF - 1, "]"));
      }
      const int32_t value = static_cast<int32_t>(id.number);
      if (!names.insert(name).second) return bad(absl::StrCat("special token ", name, " is given twice"));
      if (auto [it, inserted] = ids.emplace(value, name); !inserted) {
        return bad(absl::StrCat("special tokens ", it->second, " and ", name, " have the same id ", value));
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
  if (const JsonValue* n = json->Find("n_ranks"); n && n->type != JsonValue::Type::kNull) {
    if (n->type != JsonValue::Type::kNumber) return bad("\"n_ranks\" is not a number");
    if (n->number != static_cast<double>(num_ranks)) {
      return bad(absl::StrCat("\"n_ranks\" is ", n->number, " but the rank file has ", num_ranks, " ranks"));
    }
  }
  return spec;
}

std::string TokenizerMetadataPath(const std::string& rank_file) {
  const std::filesystem::path p(rank_file);
  return p.has_extension() ? std::filesystem::path(p).replace_extension(".json").string()
                           : rank_file + ".json";
}

std::string FindTokenizerMetadataFile(const std::string& rank_file) {
  for (const std::string& c : {TokenizerMetadataPath(rank_file), rank_file + ".json"}) {
    if (c != rank_file && PathExists(c)) return c;
  }
  return "";
}

}  // namespace tessera::data
