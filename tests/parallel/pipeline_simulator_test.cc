// Tests of parallel/pipeline/simulator: every built-in schedule over a grid of sizes (complete,
// deadlock-free, bubble equal to its closed form, peak live activations), timings and a
// timeline worked out by hand, and each kind of bad schedule rejected with a useful message.
#include "parallel/pipeline/simulator.h"

#include <map>
#include <string>
#include <tuple>

#include "tests/catch_compat.h"

using tessera::parallel::pipeline::Action;
using tessera::parallel::pipeline::ActionCosts;
using tessera::parallel::pipeline::ActionKind;
using tessera::parallel::pipeline::CheckSchedule;
using tessera::parallel::pipeline::MakeSchedule;
using tessera::parallel::pipeline::ParseSchedule;
using tessera::parallel::pipeline::RenderTimeline;
using tessera::parallel::pipeline::Schedule;
using tessera::parallel::pipeline::Simulate;
using tessera::parallel::pipeline::SimulationResult;

namespace {

// Simulation times here are sums of 1, 2 and 1/2 (exact in binary); the bubble fraction adds one
// division, so 1e-9 is far above rounding and far below any real difference (>= 1/(v*m+p)^2).
constexpr double kTolerance = 1e-9;

bool Contains(const absl::Status& status, const std::string& text) {
  return std::string(status.message()).find(text) != std::string::npos;
}

absl::Status SimulateText(const std::string& text) {
  auto s = ParseSchedule(text);
  if (!s.ok()) return s.status();
  return Simulate(*s, ActionCosts{}).status();
}

// Counts, independently of the simulator's checks, how often each (rank, chunk, micro-batch) is
// forwarded and backwarded (B counts once; I and W count once only together).
void CheckExactlyOnce(const Schedule& s) {
  for (int64_t r = 0; r < s.pp; ++r) {
    std::map<std::tuple<int64_t, int64_t, ActionKind>, int> count;
    for (const Action& a : s.actions[r]) ++count[{a.chunk, a.microbatch, a.kind}];
    for (int64_t c = 0; c < s.v; ++c) {
      for (int64_t mb = 0; mb < s.microbatches; ++mb) {
        CATCH_CHECK(count[{c, mb, ActionKind::kForward}] == 1);
        const int full = count[{c, mb, ActionKind::kBackward}];
        const int input = count[{c, mb, ActionKind::kBackwardInput}];
        const int weight = count[{c, mb, ActionKind::kBackwardWeight}];
        CATCH_CHECK(((full == 1 && input == 0 && weight == 0) || (full == 0 && input == 1 && weight == 1)));
      }
    }
  }
}

int64_t MaxOf(const std::vector<int64_t>& v) { return *std::max_element(v.begin(), v.end()); }

}  // namespace

CATCH_TEST_CASE("every built-in schedule is complete, deadlock-free and meets its closed form") {
  for (int64_t p : {1, 2, 4, 8}) {
    for (int64_t m : {int64_t{1}, p, 2 * p, 8 * p}) {
      CATCH_CAPTURE(p, m);
      std::map<std::string, SimulationResult> results;
      for (const char* name : {"gpipe", "1f1b", "zb-h1"}) {
        auto s = MakeSchedule(name, p, m, 1);
        CATCH_REQUIRE(s.ok());
        CheckExactlyOnce(*s);
        auto r = Simulate(*s, ActionCosts{});
        CATCH_CAPTURE(name);
        CATCH_REQUIRE(r.ok());
        results[name] = *r;
      }
      // GPipe and 1F1B with F = 1, B = 2: (p-1)/(m+p-1).
      const double one_f_one_b = static_cast<double>(p - 1) / (m + p - 1);
      CATCH_CHECK(std::abs(results["gpipe"].bubble_fraction - one_f_one_b) < kTolerance);
      CATCH_CHECK(std::abs(results["1f1b"].bubble_fraction - one_f_one_b) < kTolerance);
      CATCH_CHECK(results["1f1b"].makespan == 3.0 * (m + p - 1));
      // Memory: 1F1B keeps at most p micro-batches (p - r on rank r); GPipe keeps all m.
      for (int64_t r = 0; r < p; ++r) {
        CATCH_CHECK(results["1f1b"].peak_live[r] == std::min(p - r, m));
        CATCH_CHECK(results["gpipe"].peak_live[r] == m);
      }
      CATCH_CHECK(MaxOf(results["1f1b"].peak_live) <= p);
      // ZB-H1: the same peak as 1F1B (its rank 0), and a smaller bubble once every rank reaches
      // its steady state: the paper's (p-1)(F+I-W) = p-1 idle per rank, so (p-1)/(3m+p-1).
      CATCH_CHECK(MaxOf(results["zb-h1"].peak_live) == MaxOf(results["1f1b"].peak_live));
      if (p > 1 && m >= p) {
        CATCH_CHECK(results["zb-h1"].bubble_fraction < results["1f1b"].bubble_fraction);
        CATCH_CHECK(std::abs(results["zb-h1"].bubble_fraction -
                             static_cast<double>(p - 1) / (3 * m + p - 1)) < kTolerance);
      }
      // Interleaved, v = 2, per-chunk costs F = 1/2, B = 1: (p-1)/(v*m+p-1). Needs m % p == 0.
      if (m % p == 0) {
        auto s = MakeSchedule("interleaved", p, m, 2);
        CATCH_REQUIRE(s.ok());
        CheckExactlyOnce(*s);
        auto r = Simulate(*s, ActionCosts::PerChunk(2));
        CATCH_REQUIRE(r.ok());
        CATCH_CHECK(std::abs(r->bubble_fraction - static_cast<double>(p - 1) / (2 * m + p - 1)) < kTolerance);
      } else {
        CATCH_CHECK_FALSE(MakeSchedule("interleaved", p, m, 2).ok());
      }
    }
  }
}

CATCH_TEST_CASE("interleaved with more chunks still meets (p-1)/(v*m+p-1)") {
  for (int64_t v : {3, 4}) {
    for (int64_t p : {2, 3, 4}) {
      const int64_t m = 2 * p;
      auto s = MakeSchedule("interleaved", p, m, v);
      CATCH_REQUIRE(s.ok());
      auto r = Simulate(*s, ActionCosts::PerChunk(v));
      CATCH_REQUIRE(r.ok());
      CATCH_CHECK(std::abs(r->bubble_fraction - static_cast<double>(p - 1) / (v * m + p - 1)) < kTolerance);
    }
  }
}

CATCH_TEST_CASE("GPipe on 2 ranks with 2 micro-batches: times and timeline by hand") {
  // Rank 0: F0 [0,1], F1 [1,2], waits for B0's gradient: rank 1 runs F0 [1,2], F1 [2,3],
  // B0 [3,5], B1 [5,7]; rank 0 then B0 [5,7], B1 [7,9]. Makespan 9, each rank busy 6.
  auto s = MakeSchedule("gpipe", 2, 2, 1);
  CATCH_REQUIRE(s.ok());
  auto r = Simulate(*s, ActionCosts{});
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK(r->makespan == 9.0);
  CATCH_CHECK(r->busy == std::vector<double>{6.0, 6.0});
  CATCH_CHECK(r->idle == std::vector<double>{3.0, 3.0});
  CATCH_CHECK(r->bubble_fraction == Approx(1.0 / 3.0).epsilon(kTolerance));
  CATCH_CHECK(r->timeline[0][5].action == Action{ActionKind::kBackward, 0, 0});
  CATCH_CHECK(r->timeline[0][5].start == 5.0);
  CATCH_CHECK(RenderTimeline(*s, *r) ==
              "rank 0 |F0F1......B0--B1--|\n"
              "rank 1 |..F0F1B0--B1--....|\n"
              "one cell = 1 time unit (2 characters); F forward, B backward, I input grad, W weight grad, "
              "then the micro-batch; '.' idle or waiting\n");
}

CATCH_TEST_CASE("communication costs: a transfer ends when both sides are posted, plus its cost") {
  // 1F1B, 2 ranks, 1 micro-batch, comm 0.5. Rank 0: F0 [0,1], then one exchange {send 0, recv
  // gradient 0} posted at 1. Rank 1 posted its receive at 0, so the activation lands at 1.5;
  // rank 1 runs F0 [1.5,2.5], B0 [2.5,4.5] and posts the gradient at 4.5: it lands at 5, when
  // rank 0's exchange completes; rank 0 runs B0 [5,7].
  auto s = MakeSchedule("1f1b", 2, 1, 1);
  CATCH_REQUIRE(s.ok());
  ActionCosts costs;
  costs.comm = 0.5;
  auto r = Simulate(*s, costs);
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK(r->makespan == 7.0);
  CATCH_CHECK(r->timeline[0][1].end == 1.5);  // 0SA0
  CATCH_CHECK(r->timeline[0][2].end == 5.0);  // 0RG0
  CATCH_CHECK(r->timeline[1][1].start == 1.5);
  CATCH_CHECK(r->busy == std::vector<double>{3.0, 3.0});
  costs.comm = -1;
  CATCH_CHECK(Contains(Simulate(*s, costs).status(), "action costs must be finite and >= 0"));
}

CATCH_TEST_CASE("one rank with two chunks passes tensors in memory") {
  CATCH_CHECK(SimulateText("0F0 1F0 1B0 0B0\n").ok());
  CATCH_CHECK(Contains(SimulateText("1F0 0F0 1B0 0B0\n"), "action 1 '1F0' needs its input first: '0F0'"));
  CATCH_CHECK(Contains(SimulateText("0F0 1F0 0B0 1B0\n"),
                       "action 3 '0B0' needs its output gradient first: '1B0' or '1I0'"));
  CATCH_CHECK(
      Contains(SimulateText("0F0 0SA0 0B0\n"), "action 2 '0SA0': with pp 1 every chunk is on this rank"));
}

CATCH_TEST_CASE("a deadlocking schedule is rejected naming the ranks and what they wait for") {
  // Rank 1 posts both receives at once and waits for activation 1, which rank 0 sends only after
  // B0; B0 needs the gradient that rank 1 sends only after its forwards.
  auto status = SimulateText(
      "0F0 0SA0 0F1 0RG0 0B0 0SA1 0RG1 0B1\n"
      "0RA0 0RA1 0F0 0F1 0B0 0SG0 0B1 0SG1\n");
  CATCH_REQUIRE_FALSE(status.ok());
  CATCH_CHECK(Contains(status, "deadlock: "));
  CATCH_CHECK(Contains(status, "rank 0 (line 1) action 4 '0RG0' waits for rank 1 (line 2) action 6 '0SG0'"));
  CATCH_CHECK(Contains(status, "rank 1 (line 2) action 2 '0RA1' waits for rank 0 (line 1) action 6 '0SA1'"));
}

CATCH_TEST_CASE("unmatched and out-of-order transfers are rejected") {
  CATCH_CHECK(Contains(
      SimulateText("0F0 0SA0 0RG0 0B0\n0F0 0B0 0SG0\n"),
      "unmatched send: rank 0 (line 1) action 2 '0SA0' sends to rank 1, which has no matching '0RA0'"));
  CATCH_CHECK(
      Contains(SimulateText("0F0 0RG0 0B0\n0RA0 0F0 0B0 0SG0\n"),
               "unmatched receive: rank 1 (line 2) action 1 '0RA0' receives from rank 0, which has no "
               "matching '0SA0'"));
  CATCH_CHECK(
      Contains(SimulateText("0F0 0F1 0SA1 0SA0 0RG0 0B0 0RG1 0B1\n0RA0 0F0 0RA1 0F1 0B0 0SG0 0B1 0SG1\n"),
               "transfers from rank 0 to rank 1 are out of order: send 1 is rank 0 (line 1) action 3 '0SA1' "
               "but receive 1 is rank 1 (line 2) action 1 '0RA0'"));
  CATCH_CHECK(Contains(SimulateText("0F0 0SA0 0RG0 0B0\n0RA0 0F0 0SA0 0B0 0SG0\n"),
                       "rank 1 (line 2) action 3 '0SA0': model chunk 1 is the last one"));
  CATCH_CHECK(Contains(SimulateText("0RA0 0F0 0SA0 0RG0 0B0\n0RA0 0F0 0B0 0SG0\n"),
                       "rank 0 (line 1) action 1 '0RA0': model chunk 0 is the first one"));
  CATCH_CHECK(Contains(SimulateText("0F0 0SA0 0RG0 0B0\n0F0 0RA0 0B0 0SG0\n"),
                       "rank 1 (line 2) action 1 '0F0' needs its input first: '0RA0' must come before it"));
}

CATCH_TEST_CASE("each micro-batch is forwarded and backwarded exactly once, B/I/W consistent") {
  CATCH_CHECK(Contains(SimulateText("0F0 0F0 0B0\n"), "rank 0 (line 1) action 2 '0F0' repeats action 1"));
  CATCH_CHECK(Contains(SimulateText("microbatches 2\n0F0 0B0 0B1\n"),
                       "rank 0 (line 2): micro-batch 1 of chunk 0 is never forwarded (no '0F1')"));
  CATCH_CHECK(Contains(SimulateText("0F0\n"), "micro-batch 0 of chunk 0 is never backwarded"));
  CATCH_CHECK(Contains(SimulateText("0F0 0B0 0I0 0W0\n"), "has both a full backward B and a split one"));
  CATCH_CHECK(Contains(SimulateText("0F0 0I0\n"), "has I but no W"));
  CATCH_CHECK(Contains(SimulateText("0F0 0W0\n"), "has W but no I"));
  CATCH_CHECK(Contains(SimulateText("0F0 0W0 0I0\n"), "action 2 '0W0' comes before its I, action 3"));
  CATCH_CHECK(Contains(SimulateText("0B0 0F0\n"), "action 1 '0B0' comes before its forward, action 2"));
  CATCH_CHECK(SimulateText("0F0 0I0 0W0\n").ok());
  // A schedule built in code without source lines names plain ranks.
  Schedule s{"hand", 1, 1, 1, {{Action{ActionKind::kForward, 0, 0}}}, {}};
  CATCH_CHECK(Contains(CheckSchedule(s), "rank 0: micro-batch 0 of chunk 0 is never backwarded"));
  s.actions.clear();
  CATCH_CHECK(Contains(CheckSchedule(s), "0 action lists"));
}

CATCH_TEST_CASE("liveness counts F until B, or until W when the backward is split") {
  // One rank: F0 F1 I0 W0 I1 W1 keeps 2 live; F0 I0 F1 W0 also 2 (0 is live until its W).
  auto r = ParseSchedule("0F0 0F1 0I0 0W0 0I1 0W1\n");
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK(Simulate(*r, ActionCosts{})->peak_live == std::vector<int64_t>{2});
  r = ParseSchedule("0F0 0I0 0F1 0W0 0I1 0W1\n");
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK(Simulate(*r, ActionCosts{})->peak_live == std::vector<int64_t>{2});
  r = ParseSchedule("0F0 0B0 0F1 0B1\n");
  CATCH_REQUIRE(r.ok());
  CATCH_CHECK(Simulate(*r, ActionCosts{})->peak_live == std::vector<int64_t>{1});
  // Interleaved pp 4, m 8, v 2: rank r's warm-up 2*(4-r-1) + 4 forwards plus the steady state's
  // first forward, before its first backward.
  auto s = MakeSchedule("interleaved", 4, 8, 2);
  CATCH_REQUIRE(s.ok());
  auto result = Simulate(*s, ActionCosts::PerChunk(2));
  CATCH_REQUIRE(result.ok());
  CATCH_CHECK(result->peak_live == std::vector<int64_t>{11, 9, 7, 5});
}

CATCH_TEST_CASE("forward-only schedules (evaluation) are complete, deadlock-free, one activation live") {
  for (int64_t pp : {1, 2, 3, 4}) {
    for (int64_t v : {1, 2, 3}) {
      for (int64_t m : {1, 2, 5}) {
        CATCH_INFO("pp " << pp << ", v " << v << ", m " << m);
        auto s = tessera::parallel::pipeline::ForwardOnlySchedule(pp, m, v);
        CATCH_REQUIRE(s.ok());
        CATCH_CHECK(s->forward_only);
        auto result = Simulate(*s, ActionCosts::PerChunk(v));
        CATCH_REQUIRE(result.ok());
        int64_t forwards = 0;
        for (const auto& list : s->actions) {
          for (const Action& a : list) {
            CATCH_CHECK((a.kind == ActionKind::kForward || a.kind == ActionKind::kSendActivation ||
                         a.kind == ActionKind::kRecvActivation));
            forwards += a.kind == ActionKind::kForward;
          }
        }
        CATCH_CHECK(forwards == pp * v * m);
        CATCH_CHECK(result->peak_live == std::vector<int64_t>(pp, 1));
      }
    }
  }
  // A training schedule without its backwards is refused; a forward-only one with a backward too.
  auto gpipe = MakeSchedule("gpipe", 2, 2, 1);
  CATCH_REQUIRE(gpipe.ok());
  Schedule forwards_only = *gpipe;
  for (auto& list : forwards_only.actions) {
    std::erase_if(list, [](const Action& a) {
      return a.kind != ActionKind::kForward && a.kind != ActionKind::kSendActivation &&
             a.kind != ActionKind::kRecvActivation;
    });
  }
  CATCH_CHECK(Contains(CheckSchedule(forwards_only), "is never backwarded"));
  forwards_only.forward_only = true;
  CATCH_CHECK(CheckSchedule(forwards_only).ok());
  Schedule with_backward = *gpipe;
  with_backward.forward_only = true;
  CATCH_CHECK(
      Contains(CheckSchedule(with_backward), "a forward-only schedule has only F, SA and RA actions"));
}
