// Tests of parallel/comm/mpi_runtime that need no MPI_Init: the library's version line, which
// goes into every run's log ("versions: ...") and must stay plain text for grep.
#include "parallel/comm/mpi_runtime.h"

#include <string>

#include "tests/catch_compat.h"

using tessera::parallel::MpiRuntime;

CATCH_TEST_CASE("the MPI library's version is one line of text, without the C string's NUL") {
  const std::string version = MpiRuntime::LibraryVersion();
  if (!MpiRuntime::Available()) {
    CATCH_CHECK(version.empty());
    return;
  }
  CATCH_CHECK_FALSE(version.empty());
  CATCH_CHECK(version.find('\0') == std::string::npos);
  CATCH_CHECK(version.find('\n') == std::string::npos);
  CATCH_CHECK(version.find('\r') == std::string::npos);
  // Printable: what `grep` must not call binary.
  for (char c : version) CATCH_CHECK(static_cast<unsigned char>(c) >= 0x20);
}
