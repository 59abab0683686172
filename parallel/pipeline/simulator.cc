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

// Every (chunk, micro-batch) of the rank forwarded and backwarded once, and data before use.
absl::Status CheckRank(const Schedule& s, int64_t r) {
  const std::vector<Action>& list = s.actions[r];
  std::map<ActionKey, size_t> position;
  for (size_t i = 0; i < list.size(); ++i) {
    auto [it, fresh] = position.emplace(KeyOf(list[i]), i);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat(At(s, r, i), " repeats action ", it->second + 1));
    }
  }
  auto find = [&](ActionKind kind, int64_t chunk, int64_t mb) -> int64_t {
    auto it = position.find(KeyOf(kind, chunk, mb));
    return it == position.end() ? -1 : static_cast<int64_t>(it->second);
  };
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
  const int64_t last_chunk = s.pp * s.v - 1;
  for (int64_t c = 0; c < s.v; ++c) {
    const int64_t k = ModelChunk(r, c, s.pp);
    for (int64_t mb = 0; mb < s.microbatches; ++mb) {
      const std::string what = absl::StrCat(s.RankLabel(r), ": micro-batch ", mb, " of chunk ", c);
      const int64_t f = find(ActionKind::kForward, c, mb), b = find(ActionKind::kBackward, c, mb),
                    in = find(ActionKind::kBackwardInput, c, mb),
                    w = find(ActionKind::kBackwardWeight, c, mb);
      if (f < 0)
        return absl::InvalidArgumentError(
            absl::StrCat(what, " is never forwarded (no '", Token(ActionKind::kForward, c, mb), "')"));
      const int64_t back = b >= 0 ? b : in;  // the action that produces the input gradient
      if (!s.forward_only) {
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
        if (back < f)
          return absl::InvalidArgumentError(
              absl::StrCat(At(s, r, back), " comes before its forward, action ", f + 1));
        if (in >= 0 && w < in)
          return absl::InvalidArgumentError(
              absl::StrCat(At(s, r, w), " comes before its I, action ", in + 1));
      }
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
      if (k < last_chunk && !s.forward_only) {
        int64_t have = find(ActionKind::kRecvGrad, c, mb);
        std::string need = Token(ActionKind::kRecvGrad, c, mb);
        if (s.pp == 1) {
          have =
              std::max(find(ActionKind::kBackward, c + 1, mb), find(ActionKind::kBackwardInput, c + 1, mb));
          need = absl::StrCat(Token(ActionKind::kBackward, c + 1, mb), "' or '",
                              Token(ActionKind::kBackwardInput, c + 1, mb));
        }
        if (have < 0 || have > back) {
          return absl::InvalidArgumentError(absl::StrCat(
              At(s, r, back), " needs its output gradient first: '", need, "' must come before it"));
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
    }
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

  SimulationResult out;
  out.busy.assign(s.pp, 0);
  out.timeline.resize(s.pp);
  std::vector<size_t> pos(s.pp, 0);
  std::vector<double> free_at(s.pp, 0);
  std::vector<std::vector<double>> posted(s.pp);  // post time of each communication action, -1 before
  for (int64_t r = 0; r < s.pp; ++r) {
    posted[r].assign(s.actions[r].size(), -1);
    out.timeline[r].resize(s.actions[r].size());
  }
  // Each rank runs as far as it can; an exchange waits until all its peers have posted. The
  // times do not depend on the order ranks are visited in: a post time is the rank's free time.
  while (true) {
    bool progress = false, done = true;
    for (int64_t r = 0; r < s.pp; ++r) {
      const std::vector<Action>& list = s.actions[r];
      while (pos[r] < list.size()) {
        const size_t i = pos[r];
        if (list[i].IsCompute()) {
          const double d = costs.Of(list[i].kind);
          out.timeline[r][i] = {list[i], free_at[r], free_at[r] + d};
          free_at[r] += d;
          out.busy[r] += d;
          ++pos[r];
          progress = true;
          continue;
        }
        size_t end = i;
        while (end < list.size() && !list[end].IsCompute()) ++end;
        if (posted[r][i] < 0) {
          for (size_t j = i; j < end; ++j) posted[r][j] = free_at[r];
          progress = true;
        }
        bool ready = true;
        for (size_t j = i; j < end && ready; ++j)
          ready = posted[(*partners)[r][j].first][(*partners)[r][j].second] >= 0;
        if (!ready) break;
        double finish = free_at[r];
        for (size_t j = i; j < end; ++j) {
          const auto [pr, pj] = (*partners)[r][j];
          const double t = std::max(posted[r][j], posted[pr][pj]) + costs.comm;
          out.timeline[r][j] = {list[j], posted[r][j], t};
          finish = std::max(finish, t);
        }
        free_at[r] = finish;
        pos[r] = end;
        progress = true;
      }
      done = done && pos[r] == list.size();
    }
    if (done) break;
    if (!progress) {
      std::vector<std::string> blocked;
      for (int64_t r = 0; r < s.pp; ++r) {
        for (size_t j = pos[r]; j < s.actions[r].size() && !s.actions[r][j].IsCompute(); ++j) {
          const auto [pr, pj] = (*partners)[r][j];
          if (posted[pr][pj] < 0) blocked.push_back(absl::StrCat(At(s, r, j), " waits for ", At(s, pr, pj)));
        }
      }
      return absl::FailedPreconditionError(absl::StrCat("deadlock: ", absl::StrJoin(blocked, "; ")));
    }
  }

  for (int64_t r = 0; r < s.pp; ++r) out.makespan = std::max(out.makespan, free_at[r]);
  double idle_total = 0;
  for (int64_t r = 0; r < s.pp; ++r) {
    out.idle.push_back(out.makespan - out.busy[r]);
    idle_total += out.idle.back();
    // Live from F until B, or until W when the backward is split (simulator.h); forward-only,
    // only during its F.
    int64_t live = 0, peak = 0;
    for (const Action& a : s.actions[r]) {
      if (a.kind == ActionKind::kForward) peak = std::max(peak, ++live);
      if (a.kind == ActionKind::kBackward || a.kind == ActionKind::kBackwardWeight ||
          (a.kind == ActionKind::kForward && s.forward_only)) {
        --live;
      }
    }
    out.peak_live.push_back(peak);
  }
  out.bubble_fraction = out.makespan > 0 ? idle_total / (s.pp * out.makespan) : 0.0;
  return out;
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
