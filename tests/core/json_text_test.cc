// Tests of core/json_text: string escapes, and number forms that read back as the same double
// (JsonNumber) or as printf's %.*g with Python's NaN and Infinity (JsonNumberAllowNan).
#include "core/json_text.h"

#include <cmath>
#include <limits>
#include <string>

#include "core/json.h"
#include "tests/catch_compat.h"

using tessera::JsonNumber;
using tessera::JsonNumberAllowNan;
using tessera::JsonQuote;

CATCH_TEST_CASE("JsonQuote escapes quotes, backslashes and control characters only") {
  CATCH_CHECK(JsonQuote("") == "\"\"");
  CATCH_CHECK(JsonQuote("plain") == "\"plain\"");
  CATCH_CHECK(JsonQuote("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CATCH_CHECK(JsonQuote("line\nfeed\rtab\t") == "\"line\\nfeed\\rtab\\t\"");
  CATCH_CHECK(JsonQuote("\x01\x1f") == "\"\\u0001\\u001f\"");
  CATCH_CHECK(JsonQuote("caf\xc3\xa9 \xf0\x9f\x8c\x8d /") == "\"caf\xc3\xa9 \xf0\x9f\x8c\x8d /\"");
  const std::string nasty = "q\"\\\n\t\x02 \xc3\xa9";
  auto back = tessera::ParseJson(JsonQuote(nasty));
  CATCH_REQUIRE(back.ok());
  CATCH_CHECK(back->string == nasty);
}

CATCH_TEST_CASE("JsonNumber is the shortest text that reads back, with a decimal point") {
  CATCH_CHECK(JsonNumber(1e-05) == "1e-05");
  CATCH_CHECK(JsonNumber(500000.0) == "500000.0");
  CATCH_CHECK(JsonNumber(0.02) == "0.02");
  CATCH_CHECK(JsonNumber(-3.0) == "-3.0");
  CATCH_CHECK(JsonNumber(std::nan("")) == "null");
  CATCH_CHECK(JsonNumber(std::numeric_limits<double>::infinity()) == "null");
  for (double v : {0.1, 1.0 / 3.0, 6.02214076e23, 1.7976931348623157e308}) {
    auto back = tessera::ParseJson(JsonNumber(v));
    CATCH_REQUIRE(back.ok());
    CATCH_CHECK(back->number == v);
  }
}

CATCH_TEST_CASE("JsonNumberAllowNan writes %.*g and Python's names of NaN and the infinities") {
  CATCH_CHECK(JsonNumberAllowNan(2.5, 9) == "2.5");
  CATCH_CHECK(JsonNumberAllowNan(12.0, 9) == "12");
  CATCH_CHECK(JsonNumberAllowNan(0.0003, 9) == "0.0003");
  CATCH_CHECK(JsonNumberAllowNan(1.0 / 3.0, 9) == "0.333333333");
  CATCH_CHECK(JsonNumberAllowNan(static_cast<float>(0.1), 9) == "0.100000001");
  CATCH_CHECK(JsonNumberAllowNan(1e-05, 9) == "1e-05");
  CATCH_CHECK(JsonNumberAllowNan(123456789012.0, 9) == "1.23456789e+11");
  CATCH_CHECK(JsonNumberAllowNan(1.0 / 3.0, 3) == "0.333");
  CATCH_CHECK(JsonNumberAllowNan(std::nan(""), 9) == "NaN");
  CATCH_CHECK(JsonNumberAllowNan(std::numeric_limits<double>::infinity(), 9) == "Infinity");
  CATCH_CHECK(JsonNumberAllowNan(-std::numeric_limits<double>::infinity(), 9) == "-Infinity");
}
