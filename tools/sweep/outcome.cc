// Outcome classification and outcome.json (outcome.h).
#include "tools/sweep/outcome.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/exit_codes.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/json_text.h"
#include "core/status_macros.h"
#include "tools/metrics_jsonl.h"

namespace tessera::sweep {
namespace {

namespace fs = std::filesystem;

// The messages that explain a failure are at the end of a log: reading the last 256 KiB keeps
// a long run's multi-gigabyte log cheap. Rank logs are read less deeply (there may be many).
constexpr std::streamoff kStdoutTail = 256 << 10;
constexpr std::streamoff kRankLogTail = 64 << 10;
constexpr int kMaxRankLogs = 64;
constexpr size_t kMaxReason = 300;

struct Name {
  Outcome outcome;
  const char* name;
};
constexpr Name kNames[] = {
    {Outcome::kCompleted, "completed"},
    {Outcome::kDiverged, "diverged"},
    {Outcome::kOutOfMemory, "out_of_memory"},
    {Outcome::kCommTimeout, "comm_timeout"},
    {Outcome::kPreempted, "preempted"},
    {Outcome::kConfigError, "config_error"},
    {Outcome::kFailed, "failed"},
};

std::string Tail(const std::string& path, std::streamoff bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = std::max<std::streamoff>(0, size - bytes);
  in.seekg(start);
  std::string text(static_cast<size_t>(size - start), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  return text;
}

// The messages of the last attempt: RUN_DIR/stdout.log after its last attempt marker, else the
// tails of the rank logs.
std::string LastAttemptText(const std::string& run_dir) {
  const std::string stdout_log = run_dir + "/stdout.log";
  if (PathExists(stdout_log)) {
    std::string text = Tail(stdout_log, kStdoutTail);
    const size_t marker = text.rfind(kAttemptMarker);
    if (marker != std::string::npos) {
      // Skip the marker line itself: it quotes the command, whose values could match a pattern.
      const size_t line_end = text.find('\n', marker);
      text = line_end == std::string::npos ? "" : text.substr(line_end + 1);
    }
    return text;
  }
  std::vector<std::string> logs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir + "/logs", ec)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind("rank-", 0) == 0) logs.push_back(entry.path().string());
  }
  std::sort(logs.begin(), logs.end());
  if (logs.size() > kMaxRankLogs) logs.resize(kMaxRankLogs);
  std::string text;
  for (const std::string& log : logs) absl::StrAppend(&text, Tail(log, kRankLogTail), "\n");
  return text;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  std::string out = s.substr(b, e - b + 1);
  if (out.size() > kMaxReason) out = out.substr(0, kMaxReason - 3) + "...";
  return out;
}

// The last line containing any of `needles` (lower-case), or "".
std::string LastLineWith(const std::string& text, std::initializer_list<const char*> needles) {
  size_t end = text.size();
  while (end > 0) {
    size_t begin = text.rfind('\n', end - 1);
    begin = begin == std::string::npos ? 0 : begin + 1;
    const std::string line = text.substr(begin, end - begin);
    const std::string lower = Lower(line);
    for (const char* n : needles) {
      if (lower.find(n) != std::string::npos) return Trim(line);
    }
    if (begin == 0) break;
    end = begin - 1;
  }
  return "";
}

// "tessera train: error: X" -> "X"; other lines unchanged.
std::string WithoutErrorPrefix(std::string line) {
  const size_t at = line.find("error: ");
  if (at != std::string::npos) line = line.substr(at + 7);
  return line;
}

std::string ErrorReason(const std::string& text) {
  return WithoutErrorPrefix(LastLineWith(text, {"error:"}));
}

// The last logged loss when it is not finite, as evidence of divergence.
std::optional<std::string> NonFiniteLastLoss(const std::string& run_dir) {
  auto log = ReadMetricsJsonl(run_dir + "/metrics.jsonl");
  if (!log.ok() || log->records.empty()) return std::nullopt;
  const MetricsRecord& last = log->records.back();
  const std::optional<double> loss = last.Get("loss");
  if (!loss || std::isfinite(*loss)) return std::nullopt;
  return absl::StrFormat("loss %g at step %d (metrics.jsonl)", *loss, last.step);
}

// Log text may hold broken UTF-8, which readers of the file reject: non-ASCII bytes become '?'.
std::string AsciiOnly(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  }
  return out;
}

}  // namespace

const char* OutcomeName(Outcome outcome) {
  for (const Name& n : kNames) {
    if (n.outcome == outcome) return n.name;
  }
  return "failed";
}

std::optional<Outcome> OutcomeFromName(const std::string& name) {
  for (const Name& n : kNames) {
    if (name == n.name) return n.outcome;
  }
  return std::nullopt;
}

Classification ClassifyOutcome(int exit_code, const std::string& run_dir) {
  const std::string text = LastAttemptText(run_dir);
  const std::string error = ErrorReason(text);
  switch (exit_code) {
    case kExitOk:
      return {Outcome::kCompleted, ""};
    case kExitUsage:
      return {Outcome::kConfigError, error};
    case kExitCommFailure: {
      std::string line = LastLineWith(text, {"collective timed out", "communication failed"});
      return {Outcome::kCommTimeout, line.empty() ? error : line};
    }
    case kExitDiverged:
      return {Outcome::kDiverged, error};
    case kExitOutOfMemory:
      return {Outcome::kOutOfMemory, error};
    case kExitPreempted:
      return {Outcome::kPreempted, "stopped by a signal after saving a checkpoint: rerun to resume"};
    default:
      break;
  }
  // A generic failure: the run folder says more.
  if (std::optional<std::string> loss = NonFiniteLastLoss(run_dir)) return {Outcome::kDiverged, *loss};
  const std::string oom =
      LastLineWith(text, {"out of memory", "outofmemoryerror", "bad_alloc", "cannot allocate memory"});
  if (!oom.empty()) return {Outcome::kOutOfMemory, WithoutErrorPrefix(oom)};
  const std::string comm =
      LastLineWith(text, {"collective timed out", "communication failed", "told to exit by a peer"});
  if (!comm.empty()) return {Outcome::kCommTimeout, WithoutErrorPrefix(comm)};
  const std::string diverged = LastLineWith(text, {"diverged", "non-finite loss"});
  if (!diverged.empty()) return {Outcome::kDiverged, WithoutErrorPrefix(diverged)};
  // A rank that died (killed, crashed) under mpirun: mpirun reports it and tears the job down,
  // and the survivors' watchdogs report the collective they were left waiting in. That is a
  // communication failure of the job, with the dead rank as its cause.
  const std::string dead = LastLineWith(text, {"mpirun noticed that process rank"});
  const std::string waiting =
      LastLineWith(text, {"while waiting", "(in all_reduce", "(in reduce_scatter", "(in all_gather",
                          "(in broadcast", "(in send_recv", "(in barrier"});
  if (!dead.empty() && !waiting.empty()) {
    return {Outcome::kCommTimeout, absl::StrCat(WithoutErrorPrefix(dead), "; ", WithoutErrorPrefix(waiting))};
  }
  if (exit_code < 0) return {Outcome::kFailed, "could not be started"};
  if (exit_code > 128 && exit_code < 128 + 65) {
    const int sig = exit_code - 128;
    std::string reason = absl::StrFormat("killed by signal %d (%s)", sig, strsignal(sig));
    if (sig == 9) absl::StrAppend(&reason, "; the kernel's OOM killer sends SIGKILL too: see dmesg");
    if (!error.empty()) absl::StrAppend(&reason, "; last error: ", error);
    return {Outcome::kFailed, reason};
  }
  return {Outcome::kFailed, error.empty() ? absl::StrCat("exit code ", exit_code) : error};
}

std::string IsoTimeUtc(int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

absl::Status WriteOutcomeFile(const std::string& run_dir, const OutcomeRecord& r) {
  std::string json = absl::StrCat("{\"run\": ", JsonQuote(AsciiOnly(r.run)), ", \"exit_code\": ", r.exit_code,
                                  ", \"outcome\": ", JsonQuote(OutcomeName(r.outcome)),
                                  ", \"reason\": ", JsonQuote(AsciiOnly(r.reason)));
  absl::StrAppend(&json, ", \"start\": ", JsonQuote(IsoTimeUtc(r.start_unix)),
                  ", \"end\": ", JsonQuote(IsoTimeUtc(r.end_unix)), ", \"start_unix\": ", r.start_unix,
                  ", \"end_unix\": ", r.end_unix, ", \"duration_s\": ", r.end_unix - r.start_unix, "}\n");
  TS_RETURN_IF_ERROR(MakeDirs(run_dir));
  return WriteFileAtomic(run_dir + "/outcome.json", json);
}

absl::StatusOr<OutcomeRecord> ReadOutcomeFile(const std::string& run_dir) {
  const std::string path = run_dir + "/outcome.json";
  if (!PathExists(path)) return absl::NotFoundError(absl::StrCat("no ", path));
  TS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto json = ParseJson(text);
  if (!json.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", json.status().message()));
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (json->type != JsonValue::Type::kObject) return bad("expected a JSON object");
  OutcomeRecord r;
  const JsonValue* outcome = json->Find("outcome");
  const JsonValue* code = json->Find("exit_code");
  if (outcome == nullptr || outcome->type != JsonValue::Type::kString) return bad("no \"outcome\" string");
  if (code == nullptr || code->type != JsonValue::Type::kNumber) return bad("no \"exit_code\" number");
  std::optional<Outcome> o = OutcomeFromName(outcome->string);
  if (!o) return bad(absl::StrCat("unknown outcome '", outcome->string, "'"));
  r.outcome = *o;
  r.exit_code = static_cast<int>(code->number);
  auto string_of = [&](const char* key) {
    const JsonValue* v = json->Find(key);
    return v != nullptr && v->type == JsonValue::Type::kString ? v->string : std::string();
  };
  auto int_of = [&](const char* key) {
    const JsonValue* v = json->Find(key);
    return v != nullptr && v->type == JsonValue::Type::kNumber ? static_cast<int64_t>(v->number) : int64_t{0};
  };
  r.run = string_of("run");
  r.reason = string_of("reason");
  r.start_unix = int_of("start_unix");
  r.end_unix = int_of("end_unix");
  return r;
}

}  // namespace tessera::sweep
