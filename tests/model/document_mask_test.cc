// Tests of document masking in the model (data.document_mask, data.reset_position_ids): a
// document packed after another computes what it computes alone, on both attention paths, and
// recomputation replays each micro-batch with its own documents.
#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "data/document_layout.h"
#include "model/model.h"
#include "tests/catch_compat.h"

using tessera::ModelConfig;
using tessera::SequenceDocuments;
using tessera::Transformer;
using tessera::kernels::DocumentAttentionPath;

namespace {

constexpr int64_t kVocab = 50, kEod = 49, kSeq = 32, kLenA = 12;

Transformer MakeModel(tessera::RecomputeMode recompute = tessera::RecomputeMode::kNone) {
  ModelConfig c;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 160;
  c.vocab_size = kVocab;
  c.tie_embeddings = false;
  c.recompute = recompute;
  Transformer model(c, kSeq);
  model->InitializeWeights(11);
  return model;
}

// Document A (kLenA tokens, the last the eod), then document B filling the row; no eod inside B.
struct Packed {
  torch::Tensor a, b, packed;
};
Packed MakePacked() {
  torch::manual_seed(5);
  torch::Tensor a = torch::randint(0, kEod, {1, kLenA}, torch::kInt64);
  a[0][kLenA - 1] = kEod;
  const torch::Tensor b = torch::randint(0, kEod, {1, kSeq - kLenA}, torch::kInt64);
  return {a, b, torch::cat({a, b}, 1)};
}

double MaxDiff(const torch::Tensor& x, const torch::Tensor& y) { return (x - y).abs().max().item<double>(); }

}  // namespace

CATCH_TEST_CASE("document mask and reset positions: B packed after A gives the logits of B alone") {
  Transformer model = MakeModel();
  torch::NoGradGuard no_grad;
  const Packed p = MakePacked();
  const auto layout = tessera::data::DocumentLayoutOf(p.packed, kEod);
  const torch::Tensor alone_b = model->forward(p.b), alone_a = model->forward(p.a);
  for (const auto path : {DocumentAttentionPath::kPerDocument, DocumentAttentionPath::kMask}) {
    model->SetDocumentAttentionPath(path);
    const torch::Tensor logits = model->forward(p.packed, {layout.segments, layout.positions});
    // The same products over other row counts (a CPU's matrix products may block 32 rows
    // otherwise than 20) and, on the mask path, a softmax over masked keys: fp32 rounding on
    // logits of O(1). Measured: 0 on the loop (bit-identical here), 1.2e-7 on the mask path; a
    // leak across the boundary moves them by O(0.1) (0.22 below). 1e-5 leaves room for other CPUs.
    CATCH_CHECK(MaxDiff(logits.narrow(1, kLenA, kSeq - kLenA), alone_b) < 1e-5);
    CATCH_CHECK(MaxDiff(logits.narrow(1, 0, kLenA), alone_a) < 1e-5);
  }
  // Without the options B sees A: the comparison above can fail.
  CATCH_CHECK(MaxDiff(model->forward(p.packed).narrow(1, kLenA, kSeq - kLenA), alone_b) > 1e-3);
}

CATCH_TEST_CASE("document mask alone: B equals B alone at the positions it has in the row") {
  Transformer model = MakeModel();
  torch::NoGradGuard no_grad;
  const Packed p = MakePacked();
  const auto layout = tessera::data::DocumentLayoutOf(p.packed, kEod);
  const torch::Tensor masked =
      model->forward(p.packed, {layout.segments, torch::Tensor()}).narrow(1, kLenA, kSeq - kLenA);
  // B alone, its rotary positions offset by A's length: the angles B had in the packed row.
  const torch::Tensor shifted = torch::arange(kLenA, kSeq, torch::kInt64).view({1, kSeq - kLenA});
  // The same angles and the same attention calls: as above (measured 0).
  CATCH_CHECK(MaxDiff(masked, model->forward(p.b, {torch::Tensor(), shifted})) < 1e-5);
  // At positions 0.. B's attention scores are the same in exact arithmetic (rotary scores depend
  // only on the distance between positions), but the angles are other fp32 table entries: equal
  // to fp32 rounding per angle (~1e-7 relative), measured 9e-8 on the logits. Equal bit for bit
  // only with data.reset_position_ids (the test above).
  const torch::Tensor alone = model->forward(p.b);
  CATCH_CHECK(MaxDiff(masked, alone) < 1e-5);
  // Positions reset but no mask: B still sees A.
  CATCH_CHECK(
      MaxDiff(model->forward(p.packed, {torch::Tensor(), layout.positions}).narrow(1, kLenA, kSeq - kLenA),
              alone) > 1e-3);
}

CATCH_TEST_CASE("recomputation replays each micro-batch with its own documents") {
  // Two micro-batches with different documents run forward before either runs backward, as in a
  // pipeline schedule; the gradients of the first must be those it has when run alone.
  torch::manual_seed(7);
  std::vector<torch::Tensor> tokens, targets;
  std::vector<SequenceDocuments> docs;
  for (int64_t eod_at : {5, 20}) {
    torch::Tensor t = torch::randint(0, kEod, {2, kSeq}, torch::kInt64);
    t.select(1, eod_at).fill_(kEod);
    const auto layout = tessera::data::DocumentLayoutOf(t, kEod);
    tokens.push_back(t);
    targets.push_back(torch::randint(0, kVocab, {2, kSeq}, torch::kInt64));
    docs.push_back({layout.segments, layout.positions});
  }
  Transformer reference = MakeModel();
  reference->Loss(tokens[0], targets[0], docs[0]).backward();
  // The first micro-batch with the second one's documents: what a replay with the wrong documents
  // would give.
  Transformer wrong = MakeModel();
  wrong->Loss(tokens[0], targets[0], docs[1]).backward();
  double wrong_by = 0;
  for (size_t i = 0; i < reference->parameters().size(); ++i) {
    wrong_by = std::max(wrong_by, MaxDiff(wrong->parameters()[i].grad(), reference->parameters()[i].grad()));
  }
  CATCH_CHECK(wrong_by > 1e-4);
  for (const auto mode : {tessera::RecomputeMode::kFull, tessera::RecomputeMode::kSelective}) {
    Transformer model = MakeModel(mode);
    const torch::Tensor first = model->Loss(tokens[0], targets[0], docs[0]);
    const torch::Tensor second = model->Loss(tokens[1], targets[1], docs[1]);
    first.backward();
    const auto ours = model->named_parameters(), theirs = reference->named_parameters();
    double worst = 0;
    for (size_t i = 0; i < ours.size(); ++i) {
      worst = std::max(worst, MaxDiff(ours[i].value().grad(), theirs[i].value().grad()));
    }
    // The replay is the same arithmetic as the first pass (measured: bit-identical); the other
    // micro-batch's documents change them by wrong_by, far more.
    CATCH_CHECK(worst < 1e-6);
    second.backward();  // and the second one completes
  }
}
