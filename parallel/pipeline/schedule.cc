// Schedules as data: action tokens, the text form, and the generators (see schedule.h).
#include "parallel/pipeline/schedule.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/status_macros.h"
#include "parallel/pipeline/partition.h"

namespace tessera::parallel::pipeline {

const char kScheduleNames[] = "gpipe, 1f1b, interleaved, zb-h1";

namespace {

// Kind letters of the grammar, indexed by ActionKind.
constexpr const char* kKindText[] = {"F", "B", "I", "W", "SA", "RA", "SG", "RG"};
// Indices above this are surely typos; it also keeps the simulator's tables small.
constexpr int64_t kMaxIndex = 1'000'000;

}  // namespace

std::string ActionToken(const Action& action) {
  return absl::StrCat(action.chunk, kKindText[static_cast<int>(action.kind)], action.microbatch);
}

absl::StatusOr<Action> ParseActionToken(const std::string& token) {
  auto error = [&] {
    return absl::InvalidArgumentError(absl::StrCat("bad action '", token,
                                                   "': expected CHUNK KIND MICROBATCH such as 0F3 "
                                                   "(KIND one of F B I W SA RA SG RG)"));
  };
  size_t i = 0;
  while (i < token.size() && std::isdigit(static_cast<unsigned char>(token[i]))) ++i;
  size_t j = i;
  while (j < token.size() && std::isupper(static_cast<unsigned char>(token[j]))) ++j;
  const std::string chunk = token.substr(0, i), kind = token.substr(i, j - i), mb = token.substr(j);
  Action action;
  const auto* kind_it = std::find(std::begin(kKindText), std::end(kKindText), kind);
  if (chunk.empty() || mb.empty() || kind_it == std::end(kKindText) ||
      !std::all_of(mb.begin(), mb.end(), [](unsigned char c) { return std::isdigit(c); }) ||
      !absl::SimpleAtoi(chunk, &action.chunk) || !absl::SimpleAtoi(mb, &action.microbatch)) {
    return error();
  }
  if (action.chunk >= kMaxIndex || action.microbatch >= kMaxIndex) {
    return absl::InvalidArgumentError(
        absl::StrCat("action '", token, "': chunk and micro-batch must be below ", kMaxIndex));
  }
  action.kind = static_cast<ActionKind>(kind_it - std::begin(kKindText));
  return action;
}

bool Schedule::operator==(const Schedule& other) const {
  return name == other.name && pp == other.pp && v == other.v && microbatches == other.microbatches &&
         actions == other.actions && forward_only == other.forward_only;
}

std::string Schedule::RankLabel(int64_t rank) const {
  if (rank < static_cast<int64_t>(source_lines.size())) {
    return absl::StrCat("rank ", rank, " (line ", source_lines[rank], ")");
  }
  return absl::StrCat("rank ", rank);
}

Peer PeerOf(const Action& action, int64_t rank, int64_t pp, int64_t v) {
  const int64_t k = ModelChunk(rank, action.chunk, pp);
  int64_t other;
  switch (action.kind) {
    case ActionKind::kSendActivation:
    case ActionKind::kRecvGrad:
      other = k + 1;
      break;
    case ActionKind::kRecvActivation:
    case ActionKind::kSendGrad:
      other = k - 1;
      break;
    default:
      return {};
  }
  // With pp > 1 neighbouring model chunks always live on different ranks.
  if (pp == 1 || other < 0 || other >= pp * v) return {};
  return {RankOfModelChunk(other, pp), LocalChunkOf(other, pp)};
}

// ---------------------------------------------------------------------------------------------
// Text form.

std::string FormatSchedule(const Schedule& schedule) {
  std::string out = "# pipeline schedule (docs/pipeline.md): one line of actions per pipeline rank\n";
  if (!schedule.name.empty()) absl::StrAppend(&out, "name ", schedule.name, "\n");
  absl::StrAppend(&out, "pp ", schedule.pp, "\nvirtual-stages ", schedule.v, "\nmicrobatches ",
                  schedule.microbatches, "\n");
  for (size_t r = 0; r < schedule.actions.size(); ++r) {
    std::vector<std::string> tokens;
    for (const Action& a : schedule.actions[r]) tokens.push_back(ActionToken(a));
    absl::StrAppend(&out, absl::StrJoin(tokens, " "), "  # rank ", r, "\n");
  }
  return out;
}

namespace {

// The directives of a schedule file as given (0 = absent), and where, for the consistency errors.
struct Directives {
  int64_t pp = 0, v = 0, microbatches = 0;
  int64_t v_line = 0, microbatches_line = 0;
  bool has_name = false;
};

// One directive line ("name ...", "pp N", "virtual-stages N", "microbatches N").
absl::Status ParseDirective(absl::string_view line, const std::string& where, int64_t line_no, Schedule& s,
                            Directives& d) {
  std::vector<std::string> words = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  const std::string& key = words[0];
  const std::string rest(absl::StripAsciiWhitespace(line.substr(key.size())));
  if (key == "name") {
    if (d.has_name) return absl::InvalidArgumentError(absl::StrCat(where, ": 'name' given twice"));
    d.has_name = true;
    s.name = rest;
    return absl::OkStatus();
  }
  int64_t* target = key == "pp"               ? &d.pp
                    : key == "virtual-stages" ? &d.v
                    : key == "microbatches"   ? &d.microbatches
                                              : nullptr;
  if (target == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": unknown directive '", key,
                     "' (expected name, pp, virtual-stages, microbatches, or a rank's actions such as 0F0)"));
  }
  if (*target != 0) return absl::InvalidArgumentError(absl::StrCat(where, ": '", key, "' given twice"));
  if (!absl::SimpleAtoi(rest, target) || *target < 1 || *target >= kMaxIndex) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": '", key, "' expects an integer from 1 to ",
                                                   kMaxIndex - 1, ", got '", rest, "'"));
  }
  if (key == "virtual-stages") d.v_line = line_no;
  if (key == "microbatches") d.microbatches_line = line_no;
  return absl::OkStatus();
}

// One rank's line of action tokens.
absl::StatusOr<std::vector<Action>> ParseActionLine(absl::string_view line, const std::string& where,
                                                    size_t rank) {
  std::vector<Action> actions;
  int64_t token_no = 0;
  for (absl::string_view token : absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
    ++token_no;
    auto action = ParseActionToken(std::string(token));
    if (!action.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " (rank ", rank, "), token ", token_no, ": ", action.status().message()));
    }
    actions.push_back(*action);
  }
  return actions;
}

// Sets the sizes: pp from the action lines, v and micro-batches from the directives or else from
// what the actions use; a directive bounds the actions.
absl::Status SetSizes(Schedule& s, const Directives& d) {
  if (s.actions.empty())
    return absl::InvalidArgumentError("schedule has no action lines (one per pipeline rank)");
  s.pp = static_cast<int64_t>(s.actions.size());
  if (d.pp != 0 && d.pp != s.pp) {
    return absl::InvalidArgumentError(absl::StrCat("directive 'pp ", d.pp, "' but the schedule has ", s.pp,
                                                   " action lines (one per rank)"));
  }
  int64_t max_chunk = 0, max_mb = 0;
  for (const auto& rank : s.actions) {
    for (const Action& a : rank)
      max_chunk = std::max(max_chunk, a.chunk), max_mb = std::max(max_mb, a.microbatch);
  }
  s.v = d.v != 0 ? d.v : max_chunk + 1;
  s.microbatches = d.microbatches != 0 ? d.microbatches : max_mb + 1;
  for (size_t r = 0; r < s.actions.size(); ++r) {
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      const std::string where = absl::StrCat("line ", s.source_lines[r], " (rank ", r, "), token ", i + 1,
                                             " '", ActionToken(a), "'");
      if (a.chunk >= s.v) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": chunk ", a.chunk, " but 'virtual-stages ",
                                                       s.v, "' (line ", d.v_line, ")"));
      }
      if (a.microbatch >= s.microbatches) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": micro-batch ", a.microbatch,
                                                       " but 'microbatches ", s.microbatches, "' (line ",
                                                       d.microbatches_line, ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Schedule> ParseSchedule(const std::string& text) {
  Schedule s;
  Directives directives;
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const std::string where = absl::StrCat("line ", line_no);
    if (std::isalpha(static_cast<unsigned char>(line[0]))) {
      TS_RETURN_IF_ERROR(ParseDirective(line, where, line_no, s, directives));
      continue;
    }
    TS_ASSIGN_OR_RETURN(std::vector<Action> actions, ParseActionLine(line, where, s.actions.size()));
    s.actions.push_back(std::move(actions));
    s.source_lines.push_back(line_no);
  }
  TS_RETURN_IF_ERROR(SetSizes(s, directives));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Generators. Each groups every rank's compute actions into steps; PlaceCommunication then
// places the transfers by the rule in schedule.h.

namespace {

Action Act(ActionKind kind, int64_t chunk, int64_t mb) { return Action{kind, chunk, mb}; }

// One rank's compute actions grouped into steps (see the placement rule in schedule.h).
using Steps = std::vector<std::vector<Action>>;

// Before each step, one exchange: the sends of what the previous step produced, then the
// receives this step needs. The last step's sends end the list.
std::vector<Action> PlaceCommunication(const Steps& steps, int64_t rank, int64_t pp, int64_t v) {
  std::vector<Action> out, sends;
  auto remote = [&](ActionKind kind, const Action& a) {
    Action comm = Act(kind, a.chunk, a.microbatch);
    return PeerOf(comm, rank, pp, v).rank >= 0 ? std::optional<Action>(comm) : std::nullopt;
  };
  for (const std::vector<Action>& step : steps) {
    out.insert(out.end(), sends.begin(), sends.end());
    sends.clear();
    for (const Action& a : step) {
      const bool forward = a.kind == ActionKind::kForward;
      if (a.kind == ActionKind::kBackwardWeight) continue;
      if (auto recv = remote(forward ? ActionKind::kRecvActivation : ActionKind::kRecvGrad, a))
        out.push_back(*recv);
    }
    for (const Action& a : step) {
      out.push_back(a);
      const bool forward = a.kind == ActionKind::kForward;
      if (a.kind == ActionKind::kBackwardWeight) continue;
      if (auto send = remote(forward ? ActionKind::kSendActivation : ActionKind::kSendGrad, a))
        sends.push_back(*send);
    }
  }
  out.insert(out.end(), sends.begin(), sends.end());
  return out;
}

Schedule Assemble(std::string name, int64_t pp, int64_t v, int64_t microbatches,
                  const std::vector<Steps>& steps) {
  Schedule s{std::move(name), pp, v, microbatches, {}, {}};
  for (int64_t r = 0; r < pp; ++r) s.actions.push_back(PlaceCommunication(steps[r], r, pp, v));
  return s;
}

absl::Status CheckSizes(int64_t pp, int64_t microbatches) {
  if (pp < 1 || pp >= kMaxIndex || microbatches < 1 || microbatches >= kMaxIndex) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline ranks and micro-batches must be from 1 to ",
                                                   kMaxIndex - 1, ", got pp ", pp, ", micro-batches ",
                                                   microbatches));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Schedule> GPipeSchedule(int64_t pp, int64_t m) {
  if (absl::Status s = CheckSizes(pp, m); !s.ok()) return s;
  std::vector<Steps> steps(pp);
  for (int64_t r = 0; r < pp; ++r) {
    for (int64_t i = 0; i < m; ++i) steps[r].push_back({Act(ActionKind::kForward, 0, i)});
    for (int64_t i = 0; i < m; ++i) steps[r].push_back({Act(ActionKind::kBackward, 0, i)});
  }
  return Assemble("gpipe", pp, 1, m, steps);
}

absl::StatusOr<Schedule> ForwardOnlySchedule(int64_t pp, int64_t m, int64_t v) {
  if (absl::Status s = CheckSizes(pp, m); !s.ok()) return s;
  if (v < 1 || v >= kMaxIndex) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtual stages must be from 1 to ", kMaxIndex - 1, ", got ", v));
  }
  std::vector<Steps> steps(pp);
  for (int64_t r = 0; r < pp; ++r) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t c = 0; c < v; ++c) steps[r].push_back({Act(ActionKind::kForward, c, i)});
    }
  }
  Schedule schedule = Assemble("forward-only", pp, v, m, steps);
  schedule.forward_only = true;
  return schedule;
}

absl::StatusOr<Schedule> OneFOneBSchedule(int64_t pp, int64_t m) {
  if (absl::Status s = CheckSizes(pp, m); !s.ok()) return s;
  std::vector<Steps> steps(pp);
  for (int64_t r = 0; r < pp; ++r) {
    Steps& c = steps[r];
    // Warm-up: rank r's first backward needs micro-batch 0's gradient, which returns only after
    // micro-batch 0 crossed the pp-r-1 later ranks forward and back. Those pp-r-1 forwards fill
    // the wait, and stopping there caps the micro-batches in flight at pp-r: that is 1F1B's
    // memory bound.
    const int64_t warmup = std::min(pp - r - 1, m);
    for (int64_t i = 0; i < warmup; ++i) c.push_back({Act(ActionKind::kForward, 0, i)});
    // Steady state: each new forward is paired with the oldest backward, keeping pp-r in flight.
    // Each action is its own step, so a forward's send and the next backward's receive share an
    // exchange, mirrored on the next rank by a backward's send and a forward's receive.
    for (int64_t i = 0; i < m - warmup; ++i) {
      c.push_back({Act(ActionKind::kForward, 0, warmup + i)});
      c.push_back({Act(ActionKind::kBackward, 0, i)});
    }
    // Cool-down: the warm-up's micro-batches still need their backward.
    for (int64_t i = m - warmup; i < m; ++i) c.push_back({Act(ActionKind::kBackward, 0, i)});
  }
  return Assemble("1f1b", pp, 1, m, steps);
}

absl::StatusOr<Schedule> InterleavedOneFOneBSchedule(int64_t pp, int64_t m, int64_t v) {
  if (absl::Status s = CheckSizes(pp, m); !s.ok()) return s;
  if (v < 2 || v >= kMaxIndex) {
    return absl::InvalidArgumentError(
        absl::StrCat("interleaved 1F1B needs at least 2 virtual stages per rank, got ", v,
                     " (with one chunk per rank use 1f1b)"));
  }
  if (m % pp != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "interleaved 1F1B needs micro-batches to be a multiple of pp: ", m, " % ", pp, " = ", m % pp));
  }
  // Each rank walks micro-batches in groups of pp: the group through chunk 0, then the same
  // group through chunk 1, ..., then the next group. pp micro-batches are exactly what fills the
  // ring: when rank 0 has pushed the group's last one through chunk 0, the group's first one
  // arrives back from rank pp-1 for chunk 1. Backward steps walk the chunks in reverse.
  const int64_t total = m * v;  // forward (and backward) actions per rank
  auto nth = [&](int64_t k, bool forward) {
    const int64_t in_group = k % (pp * v);
    const int64_t chunk = forward ? in_group / pp : v - 1 - in_group / pp;
    const int64_t mb = k / (pp * v) * pp + in_group % pp;
    return Act(forward ? ActionKind::kForward : ActionKind::kBackward, chunk, mb);
  };
  std::vector<Steps> steps(pp);
  for (int64_t r = 0; r < pp; ++r) {
    Steps& c = steps[r];
    // Warm-up (Megatron's count): the first backward is of the last chunk, so micro-batch 0 must
    // first cross the (v-1) * pp earlier model chunks, then the last chunk's ranks forward and
    // back: (v-1) * pp forwards, plus pp-r-1 steps each way.
    const int64_t warmup = std::min((pp - r - 1) * 2 + (v - 1) * pp, total);
    for (int64_t k = 0; k < warmup; ++k) c.push_back({nth(k, true)});
    // Steady state: a forward and a backward form one step, so one exchange carries both their
    // sends and the next step's receives. Every rank then sends to and receives from both
    // neighbours at once; with separate exchanges the ring of ranks (rank pp-1 feeds rank 0's
    // next chunk) would have each rank's lone send wait for a receiver stuck in its own send.
    for (int64_t k = 0; k < total - warmup; ++k) c.push_back({nth(warmup + k, true), nth(k, false)});
    for (int64_t k = total - warmup; k < total; ++k) c.push_back({nth(k, false)});
  }
  return Assemble("interleaved", pp, v, m, steps);
}

absl::StatusOr<Schedule> ZeroBubbleH1Schedule(int64_t pp, int64_t m) {
  if (absl::Status s = CheckSizes(pp, m); !s.ok()) return s;
  std::vector<Steps> steps(pp);
  for (int64_t r = 0; r < pp; ++r) {
    // The paper's handcrafted H1: for x = 0, 1, ..., rank r runs the triple
    //   F of micro-batch x, I of micro-batch x-(pp-1-r), W of micro-batch x-(pp-1),
    // leaving out indices outside 0..m-1. I takes the place of 1F1B's backward (same lag, so
    // the same warm-up of pp-1-r forwards): it is what the previous rank waits for. W has no
    // reader, so every rank lags it by pp-1: rank 0 runs it right after I as in 1F1B, rank r
    // defers r of them, which then fill the cool-down where 1F1B waits for gradients. A
    // micro-batch is live from F to W, at most pp of them on every rank: 1F1B's peak on rank 0.
    // Read as phases: pp-1-r forwards; r (F, I) pairs; (F, I, W) steady; pp-1-r (I, W); r W's.
    //
    // Exchanges: while forwards remain, W joins I's step, so I's gradient goes out after the W
    // together with the receive for the next F; that is when the previous rank, done with that
    // F, posts the mirror pair (its send of the F, its receive of the gradient). Sent right after
    // I instead, the gradient would wait for that pair and hold up the W. In the cool-down the
    // previous rank idles until the gradient comes, so it leaves right after I.
    for (int64_t x = 0; x < m + pp - 1; ++x) {
      const int64_t i = x - (pp - 1 - r), w = x - (pp - 1);
      const bool has_i = i >= 0 && i < m, has_w = w >= 0 && w < m;
      if (x < m) steps[r].push_back({Act(ActionKind::kForward, 0, x)});
      if (has_i) steps[r].push_back({Act(ActionKind::kBackwardInput, 0, i)});
      if (has_w && has_i && x + 1 < m) {
        steps[r].back().push_back(Act(ActionKind::kBackwardWeight, 0, w));
      } else if (has_w) {
        steps[r].push_back({Act(ActionKind::kBackwardWeight, 0, w)});
      }
    }
  }
  return Assemble("zb-h1", pp, 1, m, steps);
}

absl::StatusOr<Schedule> MakeSchedule(const std::string& name, int64_t pp, int64_t m, int64_t v) {
  if (name == "interleaved") return InterleavedOneFOneBSchedule(pp, m, v);
  if (name != "gpipe" && name != "1f1b" && name != "zb-h1") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown schedule '", name, "' (expected one of ", kScheduleNames, ")"));
  }
  if (v != 1) {
    return absl::InvalidArgumentError(absl::StrCat("schedule ", name, " runs one chunk per rank, got ", v,
                                                   " virtual stages (interleaved runs several)"));
  }
  if (name == "gpipe") return GPipeSchedule(pp, m);
  if (name == "1f1b") return OneFOneBSchedule(pp, m);
  return ZeroBubbleH1Schedule(pp, m);
}

}  // namespace tessera::parallel::pipeline
