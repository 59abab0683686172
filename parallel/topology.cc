// Mixed-radix rank arithmetic: with order (a, b, c), rank = a + |a| * (b + |b| * c).
#include "parallel/topology.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tessera::parallel {
namespace {

int64_t Get(const Coordinates& c, Dim d) {
  return d == Dim::kTensor ? c.tp : d == Dim::kPipeline ? c.pp : c.dp;
}
int64_t& Get(Coordinates& c, Dim d) { return d == Dim::kTensor ? c.tp : d == Dim::kPipeline ? c.pp : c.dp; }

}  // namespace

absl::StatusOr<Topology> Topology::Create(int64_t world_size, ParallelDims dims, const std::string& order) {
  if (world_size < 1) return absl::InvalidArgumentError(absl::StrCat("world size ", world_size, " < 1"));
  if (dims.tp < 1 || dims.pp < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.tp = ", dims.tp, " and parallel.pp = ", dims.pp, " must be >= 1"));
  }
  if (dims.dp <= 0) {
    if (world_size % (dims.tp * dims.pp) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("world size ", world_size, " is not divisible by tp x pp = ", dims.tp, " x ", dims.pp,
                       " = ", dims.tp * dims.pp, ", so parallel.dp = auto has no whole value"));
    }
    dims.dp = world_size / (dims.tp * dims.pp);
  }
  if (dims.tp * dims.pp * dims.dp != world_size) {
    return absl::InvalidArgumentError(absl::StrCat("world size ", world_size, " != tp x pp x dp = ", dims.tp,
                                                   " x ", dims.pp, " x ", dims.dp, " = ",
                                                   dims.tp * dims.pp * dims.dp));
  }
  const std::map<std::string, Dim> names = {{"tp", Dim::kTensor}, {"pp", Dim::kPipeline}, {"dp", Dim::kData}};
  std::vector<std::string> parts = absl::StrSplit(order, '-');
  std::array<Dim, 3> dims_order;
  std::set<std::string> seen;
  if (parts.size() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank order '", order, "': expected the three names tp, pp, dp joined by '-', e.g. tp-dp-pp"));
  }
  for (size_t i = 0; i < 3; ++i) {
    auto it = names.find(parts[i]);
    if (it == names.end() || !seen.insert(parts[i]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank order '", order, "': expected each of tp, pp, dp exactly once"));
    }
    dims_order[i] = it->second;
  }
  return Topology(dims, dims_order);
}

int64_t Topology::Size(Dim dim) const {
  return dim == Dim::kTensor ? dims_.tp : dim == Dim::kPipeline ? dims_.pp : dims_.dp;
}

Coordinates Topology::CoordinatesOf(int64_t rank) const {
  Coordinates c;
  for (Dim d : order_) {
    Get(c, d) = rank % Size(d);
    rank /= Size(d);
  }
  return c;
}

int64_t Topology::RankOf(const Coordinates& c) const {
  int64_t rank = 0;
  for (int i = 2; i >= 0; --i) rank = rank * Size(order_[i]) + Get(c, order_[i]);
  return rank;
}

std::vector<int64_t> Topology::GroupOf(Dim dim, int64_t rank) const {
  Coordinates c = CoordinatesOf(rank);
  std::vector<int64_t> group;
  for (int64_t i = 0; i < Size(dim); ++i) {
    Get(c, dim) = i;
    group.push_back(RankOf(c));
  }
  return group;
}

std::vector<std::vector<int64_t>> Topology::Groups(Dim dim) const {
  std::vector<std::vector<int64_t>> groups;
  std::set<int64_t> covered;
  for (int64_t r = 0; r < world_size(); ++r) {
    if (covered.count(r)) continue;
    groups.push_back(GroupOf(dim, r));
    covered.insert(groups.back().begin(), groups.back().end());
  }
  return groups;
}

std::vector<int64_t> Topology::ModelGroupOf(int64_t rank) const {
  const Coordinates mine = CoordinatesOf(rank);
  std::vector<int64_t> group;
  for (int64_t r = 0; r < world_size(); ++r) {
    if (CoordinatesOf(r).dp == mine.dp) group.push_back(r);
  }
  return group;
}

std::vector<int64_t> Topology::EmbeddingGroupOf(int64_t rank) const {
  Coordinates c = CoordinatesOf(rank);
  if (c.pp != 0 && c.pp != dims_.pp - 1) return {};
  c.pp = 0;
  std::vector<int64_t> group = {RankOf(c)};
  if (dims_.pp > 1) {
    c.pp = dims_.pp - 1;
    group.push_back(RankOf(c));
  }
  return group;
}

std::string Topology::order() const {
  auto name = [](Dim d) { return d == Dim::kTensor ? "tp" : d == Dim::kPipeline ? "pp" : "dp"; };
  return absl::StrCat(name(order_[0]), "-", name(order_[1]), "-", name(order_[2]));
}

std::string Topology::Table() const {
  std::string out = absl::StrFormat(
      "world %d = tp %d x pp %d x dp %d, order %s (innermost first)\n"
      " rank   tp   pp   dp\n",
      world_size(), dims_.tp, dims_.pp, dims_.dp, order());
  for (int64_t r = 0; r < world_size(); ++r) {
    Coordinates c = CoordinatesOf(r);
    absl::StrAppend(&out, absl::StrFormat("%5d %4d %4d %4d\n", r, c.tp, c.pp, c.dp));
  }
  return out;
}

std::string Topology::GroupsReport() const {
  constexpr size_t kShown = 64;  // a 4096-rank world lists its first groups only
  auto line = [](const std::string& kind, const std::vector<std::vector<int64_t>>& groups) {
    std::string out = absl::StrCat(kind, " groups:");
    for (size_t i = 0; i < groups.size() && i < kShown; ++i) {
      absl::StrAppend(&out, " [", absl::StrJoin(groups[i], ","), "]");
    }
    if (groups.size() > kShown) absl::StrAppend(&out, " ... (", groups.size(), " groups)");
    if (groups.empty()) absl::StrAppend(&out, " none");
    return out + "\n";
  };
  std::vector<std::vector<int64_t>> model, embedding;
  std::set<int64_t> seen_model, seen_embedding;
  for (int64_t r = 0; r < world_size(); ++r) {
    if (!seen_model.count(r)) {
      model.push_back(ModelGroupOf(r));
      seen_model.insert(model.back().begin(), model.back().end());
    }
    std::vector<int64_t> e = EmbeddingGroupOf(r);
    if (!e.empty() && !seen_embedding.count(r)) {
      seen_embedding.insert(e.begin(), e.end());
      embedding.push_back(std::move(e));
    }
  }
  return line("tp", Groups(Dim::kTensor)) + line("pp", Groups(Dim::kPipeline)) +
         line("dp", Groups(Dim::kData)) + line("model", model) + line("embedding", embedding);
}

}  // namespace tessera::parallel
