// Tests of data/json: strict parsing, string decoding (escapes, surrogate pairs), the
// single-field extraction used by preprocess, and errors that give the byte offset.
#include "core/json.h"

#include <random>
#include <string>

#include "tests/catch_compat.h"

using tessera::ExtractJsonStringField;
using tessera::JsonField;
using tessera::JsonValue;
using tessera::ParseJson;

CATCH_TEST_CASE("ParseJson builds a tree of every value type") {
  auto v =
      ParseJson(R"( {"a": [1, -2.5e3, true, false, null], "b": {"c": "d\n\u00e9\ud83c\udf0d"}, "a": 3} )");
  CATCH_REQUIRE(v.ok());
  CATCH_CHECK(v->type == JsonValue::Type::kObject);
  CATCH_CHECK(v->Find("a")->number == 3);  // last duplicate wins, as in Python
  CATCH_CHECK(v->object[0].second.array.size() == 5);
  CATCH_CHECK(v->object[0].second.array[1].number == -2500);
  CATCH_CHECK(v->Find("b")->Find("c")->string == "d\n\xc3\xa9\xf0\x9f\x8c\x8d");
}

CATCH_TEST_CASE("malformed JSON is an error with the byte offset") {
  for (const char* bad : {"", "{", "{\"a\" 1}", "{\"a\": 01}", "{\"a\": 1,}", "[1 2]", "{\"a\": tru}",
                          "{\"a\": \"x\ty\"}", "{\"a\": \"\\q\"}", "{\"a\": \"\\ud800\"}",
                          "{\"a\": \"\\udc00\"}", "{} x", "{\"a\": 1.}", "{\"a\": -}", "\"unterminated"}) {
    auto v = ParseJson(bad);
    CATCH_CHECK(!v.ok());
  }
  auto v = ParseJson("{\"a\": [1, 2,, 3]}");
  CATCH_CHECK(std::string(v.status().message()).find("byte offset 12") != std::string::npos);
  auto deep = ParseJson(std::string(1000, '[') + std::string(1000, ']'));
  CATCH_CHECK(!deep.ok());  // nesting limit, not a stack overflow
}

CATCH_TEST_CASE("ExtractJsonStringField validates the line and reports missing or non-string fields") {
  std::string value;
  auto r =
      ExtractJsonStringField(R"({"id": 7, "meta": {"text": 1}, "text": "hello \"world\""})", "text", &value);
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK(*r == JsonField::kFound);
  CATCH_CHECK(value == "hello \"world\"");
  CATCH_CHECK(*ExtractJsonStringField(R"({"id": 7})", "text", &value) == JsonField::kMissing);
  CATCH_CHECK(*ExtractJsonStringField(R"({"text": ["a"]})", "text", &value) == JsonField::kNotString);
  CATCH_CHECK(!ExtractJsonStringField(R"({"text": "a"} trailing)", "text", &value).ok());
  CATCH_CHECK(!ExtractJsonStringField(R"(["text"])", "text", &value).ok());
  auto utf8 = ExtractJsonStringField("{\"text\": \"a\xff\"}", "text", &value);
  CATCH_CHECK(!utf8.ok());
  CATCH_CHECK(std::string(utf8.status().message()).find("invalid UTF-8") == 0);
}

CATCH_TEST_CASE("randomized corruption of JSON lines gives a result or an error, never a crash") {
  const std::string valid =
      R"({"id": 12, "text": "caf\u00e9 \ud83c\udf0d \"q\" \\ / \n", "meta": {"a": [1, 2.5, -3e2, true, null]}})";
  std::mt19937 rng(3);
  int errors = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string s = valid;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s[at] = static_cast<char>(rng());
          break;
        case 1:
          s.erase(at, 1 + rng() % 4);
          break;
        default:
          s.insert(at, 1, "{}[]\",:\\u0"[rng() % 11]);
          break;
      }
      if (s.empty()) s = "x";
    }
    std::string value;
    auto r = ExtractJsonStringField(s, "text", &value);
    auto tree = ParseJson(s);
    if (!r.ok()) {
      ++errors;
      CATCH_CHECK(!r.status().message().empty());
    }
    CATCH_CHECK(r.ok() == (tree.ok() && tree->type == JsonValue::Type::kObject));
  }
  CATCH_CHECK(errors > 10000);
}

CATCH_TEST_CASE("hostile JSON: deep nesting and numbers beyond a double are errors, not crashes") {
  // 100000 levels would overflow the stack of a recursive parser without a depth limit.
  for (const std::string& deep :
       {std::string(100000, '['), std::string(100000, '[') + std::string(100000, ']'), [] {
          std::string s;
          for (int i = 0; i < 100000; ++i) s += "{\"a\":";
          return s;
        }()}) {
    auto v = ParseJson(deep);
    CATCH_REQUIRE(!v.ok());
    CATCH_CHECK(std::string(v.status().message()).find("levels of nesting") != std::string::npos);
    std::string value;
    auto field = ExtractJsonStringField("{\"x\":" + deep, "x", &value);
    CATCH_REQUIRE(!field.ok());
    CATCH_CHECK(std::string(field.status().message()).find("levels of nesting") != std::string::npos);
  }
  // The limit is generous for real documents.
  CATCH_CHECK(ParseJson(std::string(200, '[') + std::string(200, ']')).ok());

  for (const char* huge : {"1e400", "-1e400", "{\"n\": 1e309}", "[0, 123456789e301]"}) {
    auto v = ParseJson(huge);
    CATCH_REQUIRE(!v.ok());
    CATCH_CHECK(std::string(v.status().message()).find("outside the range of a double") != std::string::npos);
  }
  auto at = ParseJson("{\"n\": 1e309}");
  CATCH_CHECK(std::string(at.status().message()).find("byte offset 6 ('1e309')") != std::string::npos);
  // Large but finite numbers, and underflow to zero, are fine.
  CATCH_CHECK(ParseJson("1.7e308").ok());
  CATCH_CHECK(ParseJson("1e-400").ok());
  // A number with a thousand digits is still one number.
  CATCH_CHECK(std::string(ParseJson(std::string(1000, '9')).status().message()).find("range") !=
              std::string::npos);
}
