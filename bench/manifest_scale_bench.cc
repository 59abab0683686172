// The manifest of a checkpoint at scale, without writing the data: a synthetic manifest of
// Llama 3 405B's training state (fp32 weights and AdamW's two moments, 12 bytes a parameter) as
// `tessera train` saves it with TP x PP x DP ranks (default 8 x 16 x 128 = 16384): every rank
// has a shard file; data-parallel rank 0 of each (tp, pp) position writes its tensor-parallel
// blocks (row-split wq, wk, wv, w_gate, w_up, output, tok_embeddings; column-split wo,
// w_down) and the first tensor-parallel rank the replicated norms; layers are spread evenly
// over the pipeline stages. Prints the serialized size and the time to serialize and to parse
// (ParseManifest: decoding plus every validation a reader runs on open), best of 3.
//
//   manifest_scale_bench [TP PP DP]
//
// Output: `manifest ranks=R tensors=T shards=S bytes=B serialize_s=X parse_s=Y`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard_file.h"

namespace tessera::checkpoint {
namespace {

struct Shape {
  int64_t dim = 16384, layers = 126, kv_dim = 8 * 128, ffn = 53248, vocab = 128256;
};

struct Grid {
  int tp = 8, pp = 16, dp = 128;
  int Rank(int t, int p, int d) const { return (p * dp + d) * tp + t; }
};

// One logical tensor split by `split_dim` (-1: replicated) over tp, saved from stage `stage`.
void AddTensor(Manifest& m, std::vector<uint64_t>& file_size, const Grid& g, const std::string& name,
               std::vector<int64_t> shape, int split_dim, int stage) {
  TensorEntry t{name, DType::kFloat32, shape, {}};
  const int parts = split_dim < 0 ? 1 : g.tp;
  for (int k = 0; k < parts; ++k) {
    std::vector<int64_t> offset(shape.size(), 0), box = shape;
    if (split_dim >= 0) {
      box[split_dim] = shape[split_dim] / parts;
      offset[split_dim] = box[split_dim] * k;
    }
    const int rank = g.Rank(k, stage, 0);
    const uint64_t bytes = static_cast<uint64_t>(NumElements(box)) * 4;
    ShardRecord s{ShardFileName(rank), file_size[rank], bytes, Region::Box(offset, box), 0x1234abcdu, rank};
    file_size[rank] += (bytes + kShardRecordAlignment - 1) / kShardRecordAlignment * kShardRecordAlignment;
    t.shards.push_back(std::move(s));
  }
  m.tensors.push_back(std::move(t));
}

Manifest Build(const Grid& g) {
  const Shape c;
  Manifest m;
  m.step = 1000;
  m.layout = Layout{g.tp * g.pp * g.dp, g.tp, g.pp, g.dp, 1, 1};
  m.config_yaml = "model:\n  dim: 16384\n";
  std::vector<uint64_t> file_size(m.layout.world_size, kShardHeaderSize);
  for (const char* prefix : {"", "optim.exp_avg/", "optim.exp_avg_sq/"}) {
    const std::string p = prefix;
    AddTensor(m, file_size, g, p + "tok_embeddings", {c.vocab, c.dim}, 0, 0);
    for (int64_t l = 0; l < c.layers; ++l) {
      const int stage = static_cast<int>(l * g.pp / c.layers);
      const std::string n = absl::StrCat(p, "layers.", l, ".");
      AddTensor(m, file_size, g, n + "attention.wq", {c.dim, c.dim}, 0, stage);
      AddTensor(m, file_size, g, n + "attention.wk", {c.kv_dim, c.dim}, 0, stage);
      AddTensor(m, file_size, g, n + "attention.wv", {c.kv_dim, c.dim}, 0, stage);
      AddTensor(m, file_size, g, n + "attention.wo", {c.dim, c.dim}, 1, stage);
      AddTensor(m, file_size, g, n + "feed_forward.w_gate", {c.ffn, c.dim}, 0, stage);
      AddTensor(m, file_size, g, n + "feed_forward.w_up", {c.ffn, c.dim}, 0, stage);
      AddTensor(m, file_size, g, n + "feed_forward.w_down", {c.dim, c.ffn}, 1, stage);
      AddTensor(m, file_size, g, n + "attention_norm", {c.dim}, -1, stage);
      AddTensor(m, file_size, g, n + "ffn_norm", {c.dim}, -1, stage);
    }
    AddTensor(m, file_size, g, p + "norm", {c.dim}, -1, g.pp - 1);
    AddTensor(m, file_size, g, p + "output", {c.vocab, c.dim}, 0, g.pp - 1);
  }
  m.blobs.push_back(BlobEntry{"loop_state", ShardFileName(0), file_size[0], 64, 0, 0});
  file_size[0] += 64;
  for (int r = 0; r < m.layout.world_size; ++r) m.files.push_back({ShardFileName(r), file_size[r], r});
  return m;
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int Main(const Grid& g) {
  const Manifest m = Build(g);
  size_t shards = 0;
  for (const TensorEntry& t : m.tensors) shards += t.shards.size();
  double serialize_s = 1e9, parse_s = 1e9;
  std::string bytes;
  for (int i = 0; i < 3; ++i) {
    auto start = std::chrono::steady_clock::now();
    bytes = SerializeManifest(m);
    serialize_s = std::min(serialize_s, Seconds(start));
    start = std::chrono::steady_clock::now();
    auto parsed = ParseManifest(bytes, "synthetic manifest");
    parse_s = std::min(parse_s, Seconds(start));
    if (!parsed.ok()) {
      std::fprintf(stderr, "%s\n", std::string(parsed.status().message()).c_str());
      return 1;
    }
  }
  std::printf("manifest ranks=%d tensors=%zu shards=%zu bytes=%zu serialize_s=%.4f parse_s=%.4f\n",
              m.layout.world_size, m.tensors.size(), shards, bytes.size(), serialize_s, parse_s);
  return 0;
}

}  // namespace
}  // namespace tessera::checkpoint

int main(int argc, char** argv) {
  tessera::checkpoint::Grid g;
  if (argc == 4 && absl::SimpleAtoi(argv[1], &g.tp) && absl::SimpleAtoi(argv[2], &g.pp) &&
      absl::SimpleAtoi(argv[3], &g.dp) && g.tp > 0 && g.pp > 0 && g.dp > 0) {
    return tessera::checkpoint::Main(g);
  }
  if (argc == 1) return tessera::checkpoint::Main(g);
  std::fprintf(stderr, "usage: %s [TP PP DP]\n", argv[0]);
  return 2;
}
