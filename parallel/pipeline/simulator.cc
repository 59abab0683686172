// The schedule checker and simulator (see simulator.h for the rules it applies).
#include "parallel/pipeline/simulator.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <deque>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "parallel/pipeline/partition.h"

namespace tessera::parallel::pipeline {

ActionCosts ActionCosts::PerChunk(int64_t v) {
  const double d = static_cast<double>(std::max<int64_t>(v, 1));
  ActionCosts c;
  c.forward /= d;
  c.backward /= d;
  c.backward_input /= d;
  c.backward_weight /= d;
  return c;
}

double ActionCosts::Of(ActionKind kind) const {
  switch (kind) {
    case ActionKind::kForward:
      return forward;
    case ActionKind::kBackward:
      return backward;
    case ActionKind::kBackwardInput:
      return backward_input;
    case ActionKind::kBackwardWeight:
      return backward_weight;
    default:
      return comm;
  }
}

namespace {

using ActionKey = std::tuple<int, int64_t, int64_t>;
ActionKey KeyOf(const Action& a) { return {static_cast<int>(a.kind), a.chunk, a.microbatch}; }
ActionKey KeyOf(ActionKind kind, int64_t chunk, int64_t mb) { return {static_cast<int>(kind), chunk, mb}; }

std::string Token(ActionKind kind, int64_t chunk, int64_t mb) { return ActionToken(Action{kind, chunk, mb}); }

// "rank 1 (line 3) action 4 '0RA2'": positions are 1-based, as a reader counts tokens.
std::string At(const Schedule& s, int64_t rank, size_t index) {
  return absl::StrCat(s.RankLabel(rank), " action ", index + 1, " '", ActionToken(s.actions[rank][index]),
                      "'");
}

// The action on the peer that completes a transfer: a send's receive and a receive's send.
Action Counterpart(const Action& a, const Peer& peer) {
  ActionKind kind = ActionKind::kRecvActivation;
  switch (a.kind) {
    case ActionKind::kSendActivation:
      kind = ActionKind::kRecvActivation;
      break;
    case ActionKind::kRecvActivation:
      kind = ActionKind::kSendActivation;
      break;
    case ActionKind::kSendGrad:
      kind = ActionKind::kRecvGrad;
      break;
    default:
      kind = ActionKind::kSendGrad;
      break;
  }
  return Action{kind, peer.chunk, a.microbatch};
}

absl::Status CheckShapeAndPeers(const Schedule& s) {
  if (s.pp < 1 || s.v < 1 || s.microbatches < 1 || static_cast<int64_t>(s.actions.size()) != s.pp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "schedule '", s.name, "' is malformed: pp ", s.pp, ", v ", s.v, ", micro-batches ", s.microbatches,
        ", ", s.actions.size(), " action lists (expected one per rank, all sizes >= 1)"));
  }
  for (int64_t r = 0; r < s.pp; ++r) {
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (a.chunk < 0 || a.chunk >= s.v || a.microbatch < 0 || a.microbatch >= s.microbatches) {
        return absl::InvalidArgumentError(absl::StrCat(At(s, r, i), ": chunk must be in [0, ", s.v,
                                                       ") and micro-batch in [0, ", s.microbatches, ")"));
      }
      if (a.IsCompute() || PeerOf(a, r, s.pp, s.v).rank >= 0) continue;
      if (s.pp == 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            At(s, r, i), ": with pp 1 every chunk is on this rank; tensors pass in memory, not by transfer"));
      }
      const int64_t k = ModelChunk(r, a.chunk, s.pp);
      const bool forward_edge = a.kind == ActionKind::kSendActivation || a.kind == ActionKind::kRecvGrad;
      return absl::InvalidArgumentError(absl::StrCat(At(s, r, i), ": model chunk ", k,
                                                     forward_edge
                                                         ? " is the last one: no chunk follows it"
                                                         : " is the first one: no chunk precedes it"));
    }
  }
  return absl::OkStatus();
}

// partner[rank][index] = {peer rank, index there} for every communication action.
using Partners = std::vector<std::vector<std::pair<int64_t, size_t>>>;

// Pairs sends with receives per direction, in order (schedule.h), or says what does not pair.
absl::StatusOr<Partners> MatchTransfers(const Schedule& s) {
  // Positions of the sends from a to b and of the receives on b from a, in list order.
  std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> sends, recvs;
  for (int64_t r = 0; r < s.pp; ++r) {
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (a.IsCompute()) continue;
      const int64_t peer = PeerOf(a, r, s.pp, s.v).rank;
      if (a.IsSend()) sends[{r, peer}].push_back(i);
      if (a.IsRecv()) recvs[{peer, r}].push_back(i);
    }
  }
  Partners partners(s.pp);
  for (int64_t r = 0; r < s.pp; ++r) partners[r].assign(s.actions[r].size(), {-1, 0});
  std::set<std::pair<int64_t, int64_t>> channels;
  for (const auto* side : {&sends, &recvs}) {
    for (const auto& entry : *side) channels.insert(entry.first);
  }
  for (const auto& channel : channels) {
    const auto [from, to] = channel;
    const std::vector<size_t>& send = sends[channel];
    const std::vector<size_t>& recv = recvs[channel];
    // First, whether every transfer has its other side at all.
    std::map<ActionKey, std::deque<size_t>> waiting;
    for (size_t j : recv) waiting[KeyOf(s.actions[to][j])].push_back(j);
    for (size_t i : send) {
      const Action& a = s.actions[from][i];
      const Action want = Counterpart(a, PeerOf(a, from, s.pp, s.v));
      auto it = waiting.find(KeyOf(want));
      if (it == waiting.end() || it->second.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("unmatched send: ", At(s, from, i), " sends to rank ",
                                                       to, ", which has no matching '", ActionToken(want),
                                                       "'"));
      }
      it->second.pop_front();
    }
    for (size_t j : recv) {
      const Action& a = s.actions[to][j];
      if (auto it = waiting.find(KeyOf(a)); !it->second.empty() && it->second.front() == j) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unmatched receive: ", At(s, to, j), " receives from rank ", from, ", which has no matching '",
            ActionToken(Counterpart(a, PeerOf(a, to, s.pp, s.v))), "'"));
      }
    }
    // Then, whether they pair in order.
    for (size_t n = 0; n < send.size(); ++n) {
      const size_t i = send[n], j = recv[n];
      const Action& a = s.actions[from][i];
      if (Counterpart(a, PeerOf(a, from, s.pp, s.v)) != s.actions[to][j]) {
        return absl::InvalidArgumentError(
            absl::StrCat("transfers from rank ", from, " to rank ", to, " are out of order: send ", n + 1,
                         " is ", At(s, from, i), " but receive ", n + 1, " is ", At(s, to, j),
                         " (transfers between two ranks pair in order)"));
      }
      partners[from][i] = {to, j};
      partners[to][j] = {from, i};
    }
  }
  return partners;
}

// Where each action is in a rank's list.
using Positions = std::map<ActionKey, size_t>;

// The position of an action in the list, or -1.
int64_t Find(const Positions& position, ActionKind kind, int64_t chunk, int64_t mb) {
  auto it = position.find(KeyOf(kind, chunk, mb));
  return it == position.end() ? -1 : static_cast<int64_t>(it->second);
}

// Forward-only schedules (evaluation): the input of micro-batch `mb` of chunk `c`, forwarded at
// action `f`, is there first, and its activation is sent after it exists.
absl::Status CheckForwardInputs(const Schedule& s, int64_t r, int64_t c, int64_t mb, int64_t f,
                                const Positions& position) {
  auto find = [&](ActionKind kind, int64_t chunk, int64_t m) { return Find(position, kind, chunk, m); };
  if (ModelChunk(r, c, s.pp) > 0) {
    const int64_t have =
        s.pp > 1 ? find(ActionKind::kRecvActivation, c, mb) : find(ActionKind::kForward, c - 1, mb);
    if (have < 0 || have > f) {
      return absl::InvalidArgumentError(absl::StrCat(
          At(s, r, f), " needs its input first: '",
          s.pp > 1 ? Token(ActionKind::kRecvActivation, c, mb) : Token(ActionKind::kForward, c - 1, mb),
          "' must come before it"));
    }
  }
  if (int64_t sa = find(ActionKind::kSendActivation, c, mb); sa >= 0 && sa < f) {
    return absl::InvalidArgumentError(
        absl::StrCat(At(s, r, sa), " sends before its forward, action ", f + 1));
  }
  return absl::OkStatus();
}

// Micro-batch `mb` of the rank's chunk `c`: forwarded and backwarded once, its inputs there
// before they are used and its outputs sent after they exist.
absl::Status CheckMicroBatch(const Schedule& s, int64_t r, int64_t c, int64_t mb, const Positions& position) {
  auto find = [&](ActionKind kind, int64_t chunk, int64_t m) { return Find(position, kind, chunk, m); };
  const int64_t k = ModelChunk(r, c, s.pp);
  const int64_t last_chunk = s.pp * s.v - 1;
  const std::string what = absl::StrCat(s.RankLabel(r), ": micro-batch ", mb, " of chunk ", c);
  const int64_t f = find(ActionKind::kForward, c, mb), b = find(ActionKind::kBackward, c, mb),
                in = find(ActionKind::kBackwardInput, c, mb), w = find(ActionKind::kBackwardWeight, c, mb);
  if (f < 0)
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is never forwarded (no '", Token(ActionKind::kForward, c, mb), "')"));
  if (s.forward_only) return CheckForwardInputs(s, r, c, mb, f, position);
  if (b < 0 && in < 0 && w < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is never backwarded (no '",
                                                   Token(ActionKind::kBackward, c, mb), "', nor '",
                                                   Token(ActionKind::kBackwardInput, c, mb), "' and '",
                                                   Token(ActionKind::kBackwardWeight, c, mb), "')"));
  }
  if (b >= 0 && (in >= 0 || w >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has both a full backward B and a split one (I/W)"));
  }
  if (b < 0 && (in < 0 || w < 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, in < 0 ? " has W but no I (the input gradient is never computed)"
                                  : " has I but no W (the weight gradient is never computed)"));
  }
  const int64_t back = b >= 0 ? b : in;  // the action that produces the input gradient
  if (back < f)
    return absl::InvalidArgumentError(
        absl::StrCat(At(s, r, back), " comes before its forward, action ", f + 1));
  if (in >= 0 && w < in)
    return absl::InvalidArgumentError(absl::StrCat(At(s, r, w), " comes before its I, action ", in + 1));
  // Inputs: from the previous/next model chunk, received or (pp == 1) computed on this rank.
  if (k > 0) {
    const int64_t have =
        s.pp > 1 ? find(ActionKind::kRecvActivation, c, mb) : find(ActionKind::kForward, c - 1, mb);
    if (have < 0 || have > f) {
      return absl::InvalidArgumentError(absl::StrCat(
          At(s, r, f), " needs its input first: '",
          s.pp > 1 ? Token(ActionKind::kRecvActivation, c, mb) : Token(ActionKind::kForward, c - 1, mb),
          "' must come before it"));
    }
  }
  if (k < last_chunk) {
    int64_t have = find(ActionKind::kRecvGrad, c, mb);
    std::string need = Token(ActionKind::kRecvGrad, c, mb);
    if (s.pp == 1) {
      have = std::max(find(ActionKind::kBackward, c + 1, mb), find(ActionKind::kBackwardInput, c + 1, mb));
      need = absl::StrCat(Token(ActionKind::kBackward, c + 1, mb), "' or '",
                          Token(ActionKind::kBackwardInput, c + 1, mb));
    }
    if (have < 0 || have > back) {
      return absl::InvalidArgumentError(
          absl::StrCat(At(s, r, back), " needs its output gradient first: '", need, "' must come before it"));
    }
  }
  // Outputs are sent after they exist.
  if (int64_t sa = find(ActionKind::kSendActivation, c, mb); sa >= 0 && sa < f) {
    return absl::InvalidArgumentError(
        absl::StrCat(At(s, r, sa), " sends before its forward, action ", f + 1));
  }
  if (int64_t sg = find(ActionKind::kSendGrad, c, mb); sg >= 0 && sg < back) {
    return absl::InvalidArgumentError(
        absl::StrCat(At(s, r, sg), " sends before its backward, action ", back + 1));
  }
  return absl::OkStatus();
}

// Every (chunk, micro-batch) of the rank forwarded and backwarded once, and data before use.
absl::Status CheckRank(const Schedule& s, int64_t r) {
  const std::vector<Action>& list = s.actions[r];
  Positions position;
  for (size_t i = 0; i < list.size(); ++i) {
    auto [it, fresh] = position.emplace(KeyOf(list[i]), i);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat(At(s, r, i), " repeats action ", it->second + 1));
    }
  }
  if (s.forward_only) {
    for (size_t i = 0; i < list.size(); ++i) {
      const ActionKind kind = list[i].kind;
      if (kind != ActionKind::kForward && kind != ActionKind::kSendActivation &&
          kind != ActionKind::kRecvActivation) {
        return absl::InvalidArgumentError(
            absl::StrCat(At(s, r, i), ": a forward-only schedule has only F, SA and RA actions"));
      }
    }
  }
  for (int64_t c = 0; c < s.v; ++c) {
    for (int64_t mb = 0; mb < s.microbatches; ++mb)
      TS_RETURN_IF_ERROR(CheckMicroBatch(s, r, c, mb, position));
  }
  return absl::OkStatus();
}

absl::StatusOr<Partners> CheckAll(const Schedule& s) {
  if (absl::Status st = CheckShapeAndPeers(s); !st.ok()) return st;
  auto partners = MatchTransfers(s);
  if (!partners.ok()) return partners.status();
  for (int64_t r = 0; r < s.pp; ++r) {
    if (absl::Status st = CheckRank(s, r); !st.ok()) return st;
  }
  return partners;
}

}  // namespace

absl::Status CheckSchedule(const Schedule& schedule) { return CheckAll(schedule).status(); }

namespace {

// The event simulation of a checked schedule: each rank runs as far as it can; an exchange (a
// run of consecutive communication actions) waits until all its peers have posted. The times do
// not depend on the order ranks are visited in: a post time is the rank's free time.
class Simulation {
 public:
  Simulation(const Schedule& s, const ActionCosts& costs, const Partners& partners)
      : s_(s), costs_(costs), partners_(partners), pos_(s.pp, 0), free_at_(s.pp, 0), posted_(s.pp) {
    out_.busy.assign(s.pp, 0);
    out_.timeline.resize(s.pp);
    for (int64_t r = 0; r < s.pp; ++r) {
      posted_[r].assign(s.actions[r].size(), -1);
      out_.timeline[r].resize(s.actions[r].size());
    }
  }

  // Runs rank r as far as it can; true when it moved or posted.
  bool Advance(int64_t r) {
    const std::vector<Action>& list = s_.actions[r];
    bool progress = false;
    while (pos_[r] < list.size()) {
      const size_t i = pos_[r];
      if (list[i].IsCompute()) {
        const double d = costs_.Of(list[i].kind);
        out_.timeline[r][i] = {list[i], free_at_[r], free_at_[r] + d};
        free_at_[r] += d;
        out_.busy[r] += d;
        ++pos_[r];
        progress = true;
        continue;
      }
      size_t end = i;
      while (end < list.size() && !list[end].IsCompute()) ++end;
      if (posted_[r][i] < 0) {
        for (size_t j = i; j < end; ++j) posted_[r][j] = free_at_[r];
        progress = true;
      }
      bool ready = true;
      for (size_t j = i; j < end && ready; ++j)
        ready = posted_[partners_[r][j].first][partners_[r][j].second] >= 0;
      if (!ready) break;
      double finish = free_at_[r];
      for (size_t j = i; j < end; ++j) {
        const auto [pr, pj] = partners_[r][j];
        const double t = std::max(posted_[r][j], posted_[pr][pj]) + costs_.comm;
        out_.timeline[r][j] = {list[j], posted_[r][j], t};
        finish = std::max(finish, t);
      }
      free_at_[r] = finish;
      pos_[r] = end;
      progress = true;
    }
    return progress;
  }

  bool Finished(int64_t r) const { return pos_[r] == s_.actions[r].size(); }

  // Which exchange waits for which, when no rank can move.
  absl::Status Deadlock() const {
    std::vector<std::string> blocked;
    for (int64_t r = 0; r < s_.pp; ++r) {
      for (size_t j = pos_[r]; j < s_.actions[r].size() && !s_.actions[r][j].IsCompute(); ++j) {
        const auto [pr, pj] = partners_[r][j];
        if (posted_[pr][pj] < 0) blocked.push_back(absl::StrCat(At(s_, r, j), " waits for ", At(s_, pr, pj)));
      }
    }
    return absl::FailedPreconditionError(absl::StrCat("deadlock: ", absl::StrJoin(blocked, "; ")));
  }

  // Makespan, idle times, the bubble and the peak of live activations, once every rank finished.
  SimulationResult Result() {
    for (int64_t r = 0; r < s_.pp; ++r) out_.makespan = std::max(out_.makespan, free_at_[r]);
    double idle_total = 0;
    for (int64_t r = 0; r < s_.pp; ++r) {
      out_.idle.push_back(out_.makespan - out_.busy[r]);
      idle_total += out_.idle.back();
      int64_t live = 0, peak = 0;
      for (const Action& a : s_.actions[r]) {
        if (a.kind == ActionKind::kForward) peak = std::max(peak, ++live);
        // Live from F until B, or until W when the backward is split (simulator.h); forward-only,
        // only during its F.
        if (a.kind == ActionKind::kBackward || a.kind == ActionKind::kBackwardWeight || s_.forward_only)
          --live;
      }
      out_.peak_live.push_back(peak);
    }
    out_.bubble_fraction = out_.makespan > 0 ? idle_total / (s_.pp * out_.makespan) : 0.0;
    return std::move(out_);
  }

 private:
  const Schedule& s_;
  const ActionCosts& costs_;
  const Partners& partners_;
  SimulationResult out_;
  std::vector<size_t> pos_;
  std::vector<double> free_at_;
  std::vector<std::vector<double>> posted_;  // post time of each communication action, -1 before
};

}  // namespace

absl::StatusOr<SimulationResult> Simulate(const Schedule& s, const ActionCosts& costs) {
  for (double c : {costs.forward, costs.backward, costs.backward_input, costs.backward_weight, costs.comm}) {
    if (!(c >= 0) || !std::isfinite(c)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "action costs must be finite and >= 0, got F %g, B %g, I %g, W %g, comm %g", costs.forward,
          costs.backward, costs.backward_input, costs.backward_weight, costs.comm));
    }
  }
  auto partners = CheckAll(s);
  if (!partners.ok()) return partners.status();
  Simulation sim(s, costs, *partners);
  while (true) {
    bool progress = false, done = true;
    for (int64_t r = 0; r < s.pp; ++r) {
      progress = sim.Advance(r) || progress;
      done = done && sim.Finished(r);
    }
    if (done) break;
    if (!progress) return sim.Deadlock();
  }
  return sim.Result();
}

std::string RenderTimeline(const Schedule& s, const SimulationResult& result) {
  // The tick: the largest step, a whole fraction 1/k of the shortest action, on which every event
  // time falls (exact for the default costs and their 1/v); otherwise the shortest action, rounded.
  std::vector<double> times;
  double shortest = 0;
  for (const auto& rank : result.timeline) {
    for (const TimedAction& t : rank) {
      times.push_back(t.start);
      times.push_back(t.end);
      const double d = t.end - t.start;
      if (t.action.IsCompute() && d > 0 && (shortest == 0 || d < shortest)) shortest = d;
    }
  }
  if (shortest == 0) return "(nothing to draw: every action costs 0)\n";
  double tick = shortest;
  for (int k = 1; k <= 64; ++k) {
    const double candidate = shortest / k;
    if (std::all_of(times.begin(), times.end(),
                    [&](double t) { return std::abs(t / candidate - std::round(t / candidate)) < 1e-6; })) {
      tick = candidate;
      break;
    }
  }
  auto column = [&](double t) { return static_cast<int64_t>(std::llround(t / tick)); };
  auto label = [&](const Action& a) {
    std::string kind = ActionToken(Action{a.kind, 0, 0}).substr(1, 1);
    if (s.v == 2 && a.chunk == 1) kind[0] = static_cast<char>(std::tolower(kind[0]));
    return absl::StrCat(s.v > 2 ? absl::StrCat(a.chunk) : "", kind, a.microbatch);
  };
  // Characters per tick: enough for every action's label to fit in its span.
  int64_t width = 1;
  for (const auto& rank : result.timeline) {
    for (const TimedAction& t : rank) {
      const int64_t ticks = column(t.end) - column(t.start);
      if (!t.action.IsCompute() || ticks <= 0) continue;
      width = std::max<int64_t>(width, (static_cast<int64_t>(label(t.action).size()) + ticks - 1) / ticks);
    }
  }
  const int64_t columns = column(result.makespan) * width;
  const int digits = static_cast<int>(absl::StrCat(s.pp - 1).size());
  std::string out;
  for (int64_t r = 0; r < s.pp; ++r) {
    std::string row(columns, '.');
    for (const TimedAction& t : result.timeline[r]) {
      const int64_t begin = column(t.start) * width, end = column(t.end) * width;
      if (!t.action.IsCompute() || end <= begin) continue;
      const std::string text = label(t.action);
      for (int64_t c = begin; c < end; ++c)
        row[c] = c - begin < static_cast<int64_t>(text.size()) ? text[c - begin] : '-';
    }
    absl::StrAppendFormat(&out, "rank %*d |%s|\n", digits, r, row);
  }
  absl::StrAppendFormat(&out,
                        "one cell = %g time unit%s (%d characters); F forward, B backward, I input grad, "
                        "W weight grad, then the micro-batch; '.' idle or waiting%s\n",
                        tick, tick == 1 ? "" : "s", width,
                        s.v == 2  ? "; lower case: chunk 1"
                        : s.v > 2 ? "; leading digit: chunk"
                                  : "");
  return out;
}

}  // namespace tessera::parallel::pipeline
