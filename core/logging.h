// Minimal leveled logging with a per-process prefix (the rank and, once known, its parallel
// coordinates), plus TS_CHECK for invariants. Debian 12's Abseil has no absl/log, and LibTorch
// owns the bare LOG/CHECK names, hence our own prefixed macros.
#pragma once

#include <sstream>
#include <string>

namespace tessera {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kFatal = 4 };

// Process-wide prefix such as "[rank 3 tp1 pp0 dp1]". Empty for single-process runs.
void SetLogPrefix(const std::string& prefix);
// Messages below this level are dropped (default kInfo; TESSERA_LOG_LEVEL=debug lowers it).
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();
// Lines below this level go only to the log file, not to stderr (ranks other than 0 keep the
// console for warnings and errors; their full log is in their file). Default: everything.
void SetConsoleMinLevel(LogLevel level);
// Also appends every line to this file (per-rank logs in the run directory). Empty disables.
void SetLogFile(const std::string& path);

namespace internal {
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream stream_;
};
// Lets `cond ? (void)0 : Voidify() & stream` discard the stream expression's type.
struct LogVoidify {
  void operator&(std::ostream&) {}
};
}  // namespace internal
}  // namespace tessera

#define TS_LOG_LEVEL_DEBUG ::tessera::LogLevel::kDebug
#define TS_LOG_LEVEL_INFO ::tessera::LogLevel::kInfo
#define TS_LOG_LEVEL_WARNING ::tessera::LogLevel::kWarning
#define TS_LOG_LEVEL_ERROR ::tessera::LogLevel::kError
#define TS_LOG_LEVEL_FATAL ::tessera::LogLevel::kFatal

// TS_LOG(INFO) << "message";  FATAL aborts after printing.
#define TS_LOG(severity)                               \
  (TS_LOG_LEVEL_##severity < ::tessera::MinLogLevel()) \
      ? (void)0                                        \
      : ::tessera::internal::LogVoidify() &            \
            ::tessera::internal::LogMessage(TS_LOG_LEVEL_##severity, __FILE__, __LINE__).stream()

// TS_CHECK(cond) << "why";  for invariants that indicate a bug in Tessera, never for user input.
#define TS_CHECK(cond)                                                                                   \
  (cond) ? (void)0                                                                                       \
         : ::tessera::internal::LogVoidify() &                                                           \
               ::tessera::internal::LogMessage(::tessera::LogLevel::kFatal, __FILE__, __LINE__).stream() \
                   << "Check failed: " #cond " "
