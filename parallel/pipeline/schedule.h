// A pipeline schedule is data: for each pipeline rank, the ordered list of actions it runs in one
// training step. Generators here produce GPipe, 1F1B, interleaved 1F1B and ZB-H1; a text form
// lets a schedule be printed, edited and read back. The simulator (simulator.h) checks a schedule
// and times it; an executor runs the lists on real tensors. No LibTorch here.
//
// Actions. Every action names a local chunk c (0..v-1; model chunk c * pp + rank, partition.h)
// and a micro-batch. Compute: F forward; B full backward; I backward for the input gradient only;
// W backward for the weight gradient only (I then W replace B, for zero-bubble schedules).
// Communication, between the chunk's rank and the rank of the neighbouring model chunk:
//   SA  send the activation that F produced to the next model chunk
//   RA  receive this chunk's input activation from the previous model chunk
//   SG  send the input gradient that B/I produced to the previous model chunk
//   RG  receive the gradient of this chunk's output from the next model chunk
// Communication actions exist only between different ranks: the first model chunk reads the
// batch, the last computes the loss, and with pp == 1 consecutive chunks pass tensors in memory.
//
// Execution contract (what the simulator checks, what an executor may rely on):
//   - A maximal run of adjacent communication actions in one rank's list is one exchange: the
//     executor posts all of them together as one Communicator::SendRecv call and waits for all
//     of them before the next compute action. An exchange completes once every peer has posted
//     the matching operation (rendezvous: a send may wait for its receiver). This is why 1F1B's
//     steady state puts "send activation" and "receive gradient" side by side: the neighbour
//     posts the mirror pair, and each completes only once the other is posted. (Waiting only for
//     the receives and completing sends later is safe too: it can only post exchanges sooner.)
//   - Messages between two ranks are matched in order, per direction: the k-th send from rank a
//     to rank b pairs with the k-th receive on b from a (no tags, as SendRecv requires).
//   - Data comes before use: RA before its F, F before its SA, RG before its B/I, B/I before its
//     SG, F before B/I, I before W.
// Generators place transfers by one rule: a rank's compute actions are grouped into steps, and
// before each step comes one exchange with the sends of what the previous step produced and the
// receives this step needs. 1F1B and GPipe make every action a step; interleaved 1F1B pairs the
// steady state's F and B; ZB-H1 lets a W join its I's step (the generators say why).
//
// Text grammar (one line per rank, in rank order; `#` starts a comment; blank lines ignored):
//   line      := directive | actions
//   directive := "name" TEXT | "pp" N | "virtual-stages" N | "microbatches" N   (optional)
//   actions   := token (whitespace token)*
//   token     := CHUNK KIND MICROBATCH, e.g. 0F3, 1B0, 0SA3
//   KIND      := F | B | I | W | SA | RA | SG | RG
// Without directives, pp is the number of action lines, v the largest chunk + 1 and the
// micro-batch count the largest micro-batch + 1.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::parallel::pipeline {

enum class ActionKind {
  kForward,
  kBackward,
  kBackwardInput,
  kBackwardWeight,
  kSendActivation,
  kRecvActivation,
  kSendGrad,
  kRecvGrad,
};

struct Action {
  ActionKind kind = ActionKind::kForward;
  int64_t chunk = 0;       // local chunk, 0..v-1
  int64_t microbatch = 0;  // 0..microbatches-1
  bool operator==(const Action&) const = default;

  bool IsCompute() const { return kind <= ActionKind::kBackwardWeight; }
  bool IsSend() const { return kind == ActionKind::kSendActivation || kind == ActionKind::kSendGrad; }
  bool IsRecv() const { return kind == ActionKind::kRecvActivation || kind == ActionKind::kRecvGrad; }
};

// "0F3" and back. The parser's error names the token and says what was expected.
std::string ActionToken(const Action& action);
absl::StatusOr<Action> ParseActionToken(const std::string& token);

struct Schedule {
  std::string name;
  int64_t pp = 1;
  int64_t v = 1;
  int64_t microbatches = 1;
  std::vector<std::vector<Action>> actions;  // actions[rank], in execution order
  // Evaluation: only forwards (F, SA, RA), no backward; ForwardOnlySchedule makes one. Not part
  // of the text form (FormatSchedule / ParseSchedule handle training schedules).
  bool forward_only = false;
  // Where each rank's line was in the parsed text (1-based), for messages; empty if generated.
  std::vector<int64_t> source_lines;

  // Equal schedules: the same name, sizes and actions (source lines are not compared).
  bool operator==(const Schedule& other) const;
  // "rank 2", or "rank 2 (line 7)" for a parsed schedule.
  std::string RankLabel(int64_t rank) const;
};

// The peer of a communication action: the rank and local chunk of the neighbouring model chunk
// (next for SA/RG, previous for RA/SG). {-1, -1} when there is none (first or last model chunk)
// or it lives on the same rank (pp == 1).
struct Peer {
  int64_t rank = -1;
  int64_t chunk = -1;
};
Peer PeerOf(const Action& action, int64_t rank, int64_t pp, int64_t v);

// The text form above, with all four directives, one rank per line; ParseSchedule reads it back.
std::string FormatSchedule(const Schedule& schedule);
// Errors name the line, the token and what was expected. Only the grammar is checked here;
// Simulate() (simulator.h) checks that the actions make a complete, deadlock-free step.
absl::StatusOr<Schedule> ParseSchedule(const std::string& text);

// Generators. Errors (bad sizes, unsupported combinations) name the numbers.
// GPipe: every forward, then every backward.
absl::StatusOr<Schedule> GPipeSchedule(int64_t pp, int64_t microbatches);
// 1F1B (PipeDream-flush): warm-up forwards, then one forward and one backward alternating.
absl::StatusOr<Schedule> OneFOneBSchedule(int64_t pp, int64_t microbatches);
// Megatron's interleaved 1F1B over v >= 2 chunks per rank; microbatches % pp == 0.
absl::StatusOr<Schedule> InterleavedOneFOneBSchedule(int64_t pp, int64_t microbatches, int64_t v);
// ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism"): 1F1B with B split into I and W, the
// W's deferred into the cool-down; the same peak activation count as 1F1B on rank 0.
absl::StatusOr<Schedule> ZeroBubbleH1Schedule(int64_t pp, int64_t microbatches);

// Forward-only (evaluation): every micro-batch through every model chunk in model order, one
// micro-batch after the other, with GPipe's transfers; any v. Named "forward-only".
absl::StatusOr<Schedule> ForwardOnlySchedule(int64_t pp, int64_t microbatches, int64_t v);

// By name: "gpipe", "1f1b", "interleaved", "zb-h1" (kScheduleNames). v must be 1 except for
// interleaved.
extern const char kScheduleNames[];
absl::StatusOr<Schedule> MakeSchedule(const std::string& name, int64_t pp, int64_t microbatches, int64_t v);

}  // namespace tessera::parallel::pipeline
