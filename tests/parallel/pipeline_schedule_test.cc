// Tests of parallel/pipeline/schedule: action tokens, the text form (round trip, errors with
// line numbers), generated action lists worked out by hand, phase lengths, generator errors.
#include "parallel/pipeline/schedule.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_join.h"
#include "tests/catch_compat.h"

using tessera::parallel::pipeline::Action;
using tessera::parallel::pipeline::ActionKind;
using tessera::parallel::pipeline::ActionToken;
using tessera::parallel::pipeline::FormatSchedule;
using tessera::parallel::pipeline::GPipeSchedule;
using tessera::parallel::pipeline::InterleavedOneFOneBSchedule;
using tessera::parallel::pipeline::MakeSchedule;
using tessera::parallel::pipeline::OneFOneBSchedule;
using tessera::parallel::pipeline::ParseActionToken;
using tessera::parallel::pipeline::ParseSchedule;
using tessera::parallel::pipeline::PeerOf;
using tessera::parallel::pipeline::Schedule;
using tessera::parallel::pipeline::ZeroBubbleH1Schedule;

namespace {

bool Contains(const absl::Status& status, const std::string& text) {
  return std::string(status.message()).find(text) != std::string::npos;
}

std::string Line(const Schedule& s, int64_t rank) {
  std::vector<std::string> tokens;
  for (const Action& a : s.actions[rank]) tokens.push_back(ActionToken(a));
  return absl::StrJoin(tokens, " ");
}

// The compute actions of a rank's list, as tokens.
std::vector<std::string> Compute(const Schedule& s, int64_t rank) {
  std::vector<std::string> out;
  for (const Action& a : s.actions[rank]) {
    if (a.IsCompute()) out.push_back(ActionToken(a));
  }
  return out;
}

}  // namespace

CATCH_TEST_CASE("action tokens round trip and reject malformed text") {
  const ActionKind kinds[] = {ActionKind::kForward,        ActionKind::kBackward,
                              ActionKind::kBackwardInput,  ActionKind::kBackwardWeight,
                              ActionKind::kSendActivation, ActionKind::kRecvActivation,
                              ActionKind::kSendGrad,       ActionKind::kRecvGrad};
  const char* texts[] = {"1F23", "1B23", "1I23", "1W23", "1SA23", "1RA23", "1SG23", "1RG23"};
  for (int k = 0; k < 8; ++k) {
    const Action a{kinds[k], 1, 23};
    CATCH_CHECK(ActionToken(a) == texts[k]);
    auto parsed = ParseActionToken(texts[k]);
    CATCH_REQUIRE(parsed.ok());
    CATCH_CHECK(*parsed == a);
  }
  for (const char* bad : {"", "F3", "0F", "0X3", "0f3", "0F3x", "-1F3", "0SX3", "0F-3"}) {
    auto parsed = ParseActionToken(bad);
    CATCH_CHECK_FALSE(parsed.ok());
    if (!parsed.ok()) CATCH_CHECK(Contains(parsed.status(), "expected CHUNK KIND MICROBATCH such as 0F3"));
  }
  CATCH_CHECK(Contains(ParseActionToken("0F1000000").status(), "must be below 1000000"));
}

CATCH_TEST_CASE("1F1B and GPipe on 2 ranks with 2 micro-batches, worked out by hand") {
  // 1F1B, rank 0: one warm-up forward, then F1 B0, then B1. Each compute action's receive comes
  // right before it and its send right after, so F1's send and B0's receive share an exchange.
  auto f = OneFOneBSchedule(2, 2);
  CATCH_REQUIRE(f.ok());
  CATCH_CHECK(f->name == "1f1b");
  CATCH_CHECK(Line(*f, 0) == "0F0 0SA0 0F1 0SA1 0RG0 0B0 0RG1 0B1");
  // Rank 1 (last): no warm-up; B0's gradient goes out with the receive for F1.
  CATCH_CHECK(Line(*f, 1) == "0RA0 0F0 0B0 0SG0 0RA1 0F1 0B1 0SG1");
  auto g = GPipeSchedule(2, 2);
  CATCH_REQUIRE(g.ok());
  CATCH_CHECK(Line(*g, 0) == "0F0 0SA0 0F1 0SA1 0RG0 0B0 0RG1 0B1");
  CATCH_CHECK(Line(*g, 1) == "0RA0 0F0 0RA1 0F1 0B0 0SG0 0B1 0SG1");
  // One rank: nothing to send.
  auto single = OneFOneBSchedule(1, 2);
  CATCH_REQUIRE(single.ok());
  CATCH_CHECK(Line(*single, 0) == "0F0 0B0 0F1 0B1");
}

CATCH_TEST_CASE("1F1B warms up with pp-r-1 forwards") {
  auto s = OneFOneBSchedule(4, 8);
  CATCH_REQUIRE(s.ok());
  for (int64_t r = 0; r < 4; ++r) {
    const auto c = Compute(*s, r);
    const auto first_b = std::find(c.begin(), c.end(), "0B0") - c.begin();
    // pp-r-1 warm-up forwards, then the steady state's first forward, then B0.
    CATCH_CHECK(first_b == 4 - r);
  }
  // With fewer micro-batches than ranks, the warm-up is all of them.
  auto few = OneFOneBSchedule(4, 2);
  CATCH_REQUIRE(few.ok());
  CATCH_CHECK(Compute(*few, 0) == std::vector<std::string>{"0F0", "0F1", "0B0", "0B1"});
}

CATCH_TEST_CASE("interleaved 1F1B on 2 ranks, 2 chunks, 2 micro-batches") {
  // Forwards walk the group of pp = 2 micro-batches through chunk 0, then chunk 1; backwards
  // the reverse. Rank 0's warm-up is 2*(2-0-1) + (2-1)*2 = 4 forwards (all of them), rank 1's is
  // 2: F0 F1 on chunk 0, then steady pairs (f0, b0) (f1, b1), then B0 B1 on chunk 0.
  auto s = InterleavedOneFOneBSchedule(2, 2, 2);
  CATCH_REQUIRE(s.ok());
  CATCH_CHECK(Compute(*s, 0) ==
              std::vector<std::string>{"0F0", "0F1", "1F0", "1F1", "1B0", "1B1", "0B0", "0B1"});
  CATCH_CHECK(Compute(*s, 1) ==
              std::vector<std::string>{"0F0", "0F1", "1F0", "1B0", "1F1", "1B1", "0B0", "0B1"});
  // Rank 1's chunk 0 (model chunk 1) feeds rank 0's chunk 1 (model chunk 2); a steady step's
  // sends and the next step's receives form one exchange.
  CATCH_CHECK(Line(*s, 1) ==
              "0RA0 0F0 0SA0 0RA1 0F1 0SA1 1RA0 1F0 1B0 1SG0 1RA1 1F1 1B1 1SG1 0RG0 0B0 0SG0 0RG1 0B1 0SG1");
}

CATCH_TEST_CASE("ZB-H1 phases: pp-1-r forwards, r (F, I) pairs, and r W's deferred to the end") {
  auto s = ZeroBubbleH1Schedule(4, 8);
  CATCH_REQUIRE(s.ok());
  for (int64_t r = 0; r < 4; ++r) {
    const auto c = Compute(*s, r);
    CATCH_CHECK(std::find(c.begin(), c.end(), "0I0") - c.begin() == 4 - r);
    // After the last I come the W of its own triple and the r deferred ones.
    const auto last_i = std::find(c.begin(), c.end(), "0I7") - c.begin();
    CATCH_CHECK(static_cast<int64_t>(c.size()) - 1 - last_i == r + 1);
    CATCH_CHECK(std::count_if(c.begin(), c.end(),
                              [](const std::string& t) { return t.find('B') != std::string::npos; }) == 0);
  }
  // The steady triple on rank 1 (F4, I2, W1): F4's send and I2's gradient receive share an
  // exchange; I2's gradient leaves after W1, with the receive for F5.
  const std::string line = Line(*s, 1);
  CATCH_CHECK(line.find("0RA4 0F4 0SA4 0RG2 0I2 0W1 0SG2 0RA5 0F5") != std::string::npos);
}

CATCH_TEST_CASE("peers of communication actions follow the interleaved placement") {
  // pp 4, v 2: rank 3's chunk 0 is model chunk 3, followed by model chunk 4 = rank 0's chunk 1.
  auto peer = PeerOf({ActionKind::kSendActivation, 0, 5}, 3, 4, 2);
  CATCH_CHECK((peer.rank == 0 && peer.chunk == 1));
  peer = PeerOf({ActionKind::kRecvActivation, 1, 5}, 0, 4, 2);
  CATCH_CHECK((peer.rank == 3 && peer.chunk == 0));
  peer = PeerOf({ActionKind::kSendGrad, 1, 5}, 0, 4, 2);
  CATCH_CHECK((peer.rank == 3 && peer.chunk == 0));
  CATCH_CHECK(PeerOf({ActionKind::kRecvActivation, 0, 0}, 0, 4, 2).rank == -1);  // model chunk 0
  CATCH_CHECK(PeerOf({ActionKind::kSendActivation, 1, 0}, 3, 4, 2).rank == -1);  // the last one
  CATCH_CHECK(PeerOf({ActionKind::kSendActivation, 0, 0}, 0, 1, 2).rank == -1);  // same rank
  CATCH_CHECK(PeerOf({ActionKind::kForward, 0, 0}, 0, 4, 2).rank == -1);
}

CATCH_TEST_CASE("every generated schedule survives the text form") {
  for (int64_t pp : {1, 2, 4, 8}) {
    for (int64_t m : {pp, 2 * pp, 8 * pp}) {
      for (const char* name : {"gpipe", "1f1b", "zb-h1", "interleaved"}) {
        auto s = MakeSchedule(name, pp, m, std::string(name) == "interleaved" ? 2 : 1);
        CATCH_REQUIRE(s.ok());
        auto back = ParseSchedule(FormatSchedule(*s));
        CATCH_REQUIRE(back.ok());
        CATCH_CHECK(*back == *s);
      }
    }
  }
}

CATCH_TEST_CASE("the parser infers sizes, skips comments and records lines") {
  auto s = ParseSchedule(
      "# two ranks, one micro-batch\n"
      "\n"
      "0F0 0SA0   0RG0 0B0   # rank 0\n"
      "  0RA0\t0F0 0B0 0SG0\n");
  CATCH_REQUIRE(s.ok());
  CATCH_CHECK(s->pp == 2);
  CATCH_CHECK(s->v == 1);
  CATCH_CHECK(s->microbatches == 1);
  CATCH_CHECK(s->name.empty());
  CATCH_CHECK(s->source_lines == std::vector<int64_t>{3, 4});
  CATCH_CHECK(s->RankLabel(1) == "rank 1 (line 4)");
  CATCH_CHECK(Line(*s, 1) == "0RA0 0F0 0B0 0SG0");
  // Directives set what the actions do not show (here: a second micro-batch nobody runs, which
  // the simulator would then reject) and the name, which may contain spaces.
  auto d = ParseSchedule("name my schedule\nmicrobatches 2\nvirtual-stages 3\n0F0 0B0\n");
  CATCH_REQUIRE(d.ok());
  CATCH_CHECK(d->name == "my schedule");
  CATCH_CHECK(d->microbatches == 2);
  CATCH_CHECK(d->v == 3);
}

CATCH_TEST_CASE("parse errors name the line and the token") {
  auto bad_token = ParseSchedule("0F0 0B0\n# comment\n0F0 0X0 0B0\n");
  CATCH_REQUIRE_FALSE(bad_token.ok());
  CATCH_CHECK(Contains(bad_token.status(), "line 3 (rank 1), token 2: bad action '0X0'"));
  auto directive = ParseSchedule("0F0 0B0\nstages 4\n");
  CATCH_REQUIRE_FALSE(directive.ok());
  CATCH_CHECK(Contains(directive.status(), "line 2: unknown directive 'stages'"));
  auto number = ParseSchedule("microbatches two\n0F0 0B0\n");
  CATCH_REQUIRE_FALSE(number.ok());
  CATCH_CHECK(Contains(number.status(), "line 1: 'microbatches' expects an integer"));
  auto twice = ParseSchedule("pp 1\npp 1\n0F0 0B0\n");
  CATCH_REQUIRE_FALSE(twice.ok());
  CATCH_CHECK(Contains(twice.status(), "line 2: 'pp' given twice"));
  auto chunk = ParseSchedule("virtual-stages 1\n0F0 0B0\n1F0 1B0\n");
  CATCH_REQUIRE_FALSE(chunk.ok());
  CATCH_CHECK(
      Contains(chunk.status(), "line 3 (rank 1), token 1 '1F0': chunk 1 but 'virtual-stages 1' (line 1)"));
  auto mb = ParseSchedule("microbatches 2\n0F0 0B0 0F2 0B2\n");
  CATCH_REQUIRE_FALSE(mb.ok());
  CATCH_CHECK(
      Contains(mb.status(), "line 2 (rank 0), token 3 '0F2': micro-batch 2 but 'microbatches 2' (line 1)"));
  auto pp = ParseSchedule("pp 3\n0F0 0B0\n0F0 0B0\n");
  CATCH_REQUIRE_FALSE(pp.ok());
  CATCH_CHECK(Contains(pp.status(), "directive 'pp 3' but the schedule has 2 action lines"));
  auto empty = ParseSchedule("# nothing\n\n");
  CATCH_REQUIRE_FALSE(empty.ok());
  CATCH_CHECK(Contains(empty.status(), "no action lines"));
}

CATCH_TEST_CASE("generator errors name the numbers") {
  auto interleaved = InterleavedOneFOneBSchedule(4, 6, 2);
  CATCH_REQUIRE_FALSE(interleaved.ok());
  CATCH_CHECK(Contains(interleaved.status(), "micro-batches to be a multiple of pp: 6 % 4 = 2"));
  auto one_chunk = InterleavedOneFOneBSchedule(4, 8, 1);
  CATCH_REQUIRE_FALSE(one_chunk.ok());
  CATCH_CHECK(Contains(one_chunk.status(), "at least 2 virtual stages per rank, got 1"));
  auto chunks = MakeSchedule("1f1b", 4, 8, 2);
  CATCH_REQUIRE_FALSE(chunks.ok());
  CATCH_CHECK(Contains(chunks.status(), "schedule 1f1b runs one chunk per rank, got 2 virtual stages"));
  auto name = MakeSchedule("zb-h2", 4, 8, 1);
  CATCH_REQUIRE_FALSE(name.ok());
  CATCH_CHECK(
      Contains(name.status(), "unknown schedule 'zb-h2' (expected one of gpipe, 1f1b, interleaved, zb-h1)"));
  auto sizes = GPipeSchedule(0, 8);
  CATCH_REQUIRE_FALSE(sizes.ok());
  CATCH_CHECK(Contains(sizes.status(), "got pp 0, micro-batches 8"));
  CATCH_CHECK_FALSE(ZeroBubbleH1Schedule(4, 0).ok());
}
