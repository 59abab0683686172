// Status propagation macros for absl::Status / absl::StatusOr, prefixed TS_ because LibTorch
// already defines bare CHECK/LOG-style macros.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#define TS_STATUS_CONCAT_INNER(a, b) a##b
#define TS_STATUS_CONCAT(a, b) TS_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define TS_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status ts_status_ = (expr);      \
    if (!ts_status_.ok()) return ts_status_; \
  } while (0)

// `TS_ASSIGN_OR_RETURN(auto x, Foo());` unwraps a StatusOr or returns its error.
#define TS_ASSIGN_OR_RETURN(lhs, expr) \
  TS_ASSIGN_OR_RETURN_IMPL(TS_STATUS_CONCAT(ts_statusor_, __LINE__), lhs, expr)
#define TS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()

namespace tessera {

// `status` with `prefix` put before its message ("data.train: " + "no such file ..."): the same
// code and the same payloads (an exit code set by WithExitCode survives). OK stays OK.
inline absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  absl::Status annotated(status.code(), absl::StrCat(prefix, status.message()));
  status.ForEachPayload(
      [&annotated](absl::string_view url, const absl::Cord& payload) { annotated.SetPayload(url, payload); });
  return annotated;
}

}  // namespace tessera
