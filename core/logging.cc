// Implementation of the prefixed logger: one line per message, written atomically to stderr
// (and the optional per-rank log file) so lines from concurrent threads never interleave.
#include "core/logging.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

namespace tessera {
namespace {

struct LogState {
  std::mutex mu;
  std::string prefix;
  FILE* file = nullptr;
  LogLevel min_level = LogLevel::kInfo;
  LogLevel console_min_level = LogLevel::kDebug;
  LogState() {
    if (const char* env = std::getenv("TESSERA_LOG_LEVEL")) {
      if (!std::strcmp(env, "debug")) min_level = LogLevel::kDebug;
      if (!std::strcmp(env, "warning")) min_level = LogLevel::kWarning;
      if (!std::strcmp(env, "error")) min_level = LogLevel::kError;
    }
  }
};

LogState& State() {
  static LogState* state = new LogState();  // never destroyed: logging works during exit
  return *state;
}

const char* LevelLetter(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "D";
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
    case LogLevel::kFatal:
      return "F";
  }
  return "?";
}

}  // namespace

void SetLogPrefix(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(State().mu);
  State().prefix = prefix;
}

void SetMinLogLevel(LogLevel level) { State().min_level = level; }
void SetConsoleMinLevel(LogLevel level) {
  std::lock_guard<std::mutex> lock(State().mu);
  State().console_min_level = level;
}
LogLevel MinLogLevel() { return State().min_level; }

void SetLogFile(const std::string& path) {
  std::lock_guard<std::mutex> lock(State().mu);
  if (State().file) std::fclose(State().file);
  State().file = path.empty() ? nullptr : std::fopen(path.c_str(), "a");
}

namespace internal {

LogMessage::LogMessage(LogLevel level, const char* file, int line)
    : level_(level), file_(file), line_(line) {}

LogMessage::~LogMessage() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm_buf;
  localtime_r(&t, &tm_buf);
  char time_text[32];
  std::strftime(time_text, sizeof(time_text), "%H:%M:%S", &tm_buf);
  std::string line;
  {
    std::lock_guard<std::mutex> lock(State().mu);
    line = std::string(LevelLetter(level_)) + " " + time_text + " " +
           (State().prefix.empty() ? "" : State().prefix + " ");
    if (level_ >= LogLevel::kError) {
      const char* base = std::strrchr(file_, '/');
      line += std::string(base ? base + 1 : file_) + ":" + std::to_string(line_) + "] ";
    }
    line += stream_.str();
    line += '\n';
    if (level_ >= State().console_min_level) {
      std::fwrite(line.data(), 1, line.size(), stderr);
      std::fflush(stderr);
    }
    if (State().file) {
      std::fwrite(line.data(), 1, line.size(), State().file);
      std::fflush(State().file);
    }
  }
  if (level_ == LogLevel::kFatal) std::abort();
}

}  // namespace internal
}  // namespace tessera
