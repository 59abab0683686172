// Includes Catch2 v2 or v3 behind one name, so tests build on Debian 12 and 13 alike.
#pragma once

#if TESSERA_CATCH_MAJOR == 3
#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
