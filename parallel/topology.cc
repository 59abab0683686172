// Mixed-radix rank arithmetic: with order (a, b, c, d), rank = a + |a| * (b + |b| * (c + |c| * d)).
#include "parallel/topology.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tessera::parallel {
namespace {

int64_t& Get(Coordinates& c, Dim d) {
  switch (d) {
    case Dim::kTensor:
      return c.tp;
    case Dim::kPipeline:
      return c.pp;
    case Dim::kContext:
      return c.cp;
    case Dim::kData:
      break;
  }
  return c.dp;
}
int64_t Get(const Coordinates& c, Dim d) { return Get(const_cast<Coordinates&>(c), d); }

const char* Name(Dim d) {
  switch (d) {
    case Dim::kTensor:
      return "tp";
    case Dim::kPipeline:
      return "pp";
    case Dim::kContext:
      return "cp";
    case Dim::kData:
      break;
  }
  return "dp";
}

// The four dimensions of `order`, innermost first; a three-name order gets cp just outside tp.
absl::StatusOr<std::array<Dim, 4>> ParseOrder(const std::string& order) {
  const std::map<std::string, Dim> names = {
      {"tp", Dim::kTensor}, {"pp", Dim::kPipeline}, {"dp", Dim::kData}, {"cp", Dim::kContext}};
  const std::vector<std::string> parts = absl::StrSplit(order, '-');
  std::vector<Dim> dims;
  std::set<std::string> seen;
  for (const std::string& part : parts) {
    auto it = names.find(part);
    if (it == names.end() || !seen.insert(part).second) break;
    dims.push_back(it->second);
    if (parts.size() == 3 && it->second == Dim::kTensor) dims.push_back(Dim::kContext);
  }
  const bool three = parts.size() == 3 && !seen.count("cp");
  if (dims.size() != 4 || !(three || parts.size() == 4)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank order '", order,
                     "': expected tp, pp, dp and optionally cp, each once, joined by '-' (innermost first), "
                     "e.g. tp-dp-pp or tp-cp-dp-pp"));
  }
  std::array<Dim, 4> out{};
  std::copy(dims.begin(), dims.end(), out.begin());
  return out;
}

}  // namespace

absl::Status Topology::CheckOrder(const std::string& order) { return ParseOrder(order).status(); }

absl::StatusOr<Topology> Topology::Create(int64_t world_size, ParallelDims dims, const std::string& order) {
  if (world_size < 1) return absl::InvalidArgumentError(absl::StrCat("world size ", world_size, " < 1"));
  if (dims.tp < 1 || dims.pp < 1 || dims.cp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.tp = ", dims.tp, ", parallel.pp = ", dims.pp,
                                                   " and parallel.cp = ", dims.cp, " must be >= 1"));
  }
  // The products name cp only where it is used, so that a 3D layout's messages stay as they were.
  const bool cp = dims.cp > 1;
  const std::string names = cp ? "tp x cp x pp" : "tp x pp";
  const std::string sizes =
      cp ? absl::StrCat(dims.tp, " x ", dims.cp, " x ", dims.pp) : absl::StrCat(dims.tp, " x ", dims.pp);
  const int64_t model = dims.tp * dims.cp * dims.pp;
  if (dims.dp <= 0) {
    if (world_size % model != 0) {
      return absl::InvalidArgumentError(absl::StrCat("world size ", world_size, " is not divisible by ",
                                                     names, " = ", sizes, " = ", model,
                                                     ", so parallel.dp = auto has no whole value"));
    }
    dims.dp = world_size / model;
  }
  if (model * dims.dp != world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world size ", world_size, " != ", names, " x dp = ", sizes, " x ", dims.dp, " = ", model * dims.dp));
  }
  absl::StatusOr<std::array<Dim, 4>> dims_order = ParseOrder(order);
  if (!dims_order.ok()) return dims_order.status();
  return Topology(dims, *dims_order);
}

int64_t Topology::Size(Dim dim) const {
  // The sizes read as coordinates: one switch over the dimensions, in Get.
  return Get(Coordinates{dims_.tp, dims_.pp, dims_.dp, dims_.cp}, dim);
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
  for (int i = 3; i >= 0; --i) rank = rank * Size(order_[i]) + Get(c, order_[i]);
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
    const Coordinates c = CoordinatesOf(r);
    if (c.dp == mine.dp && c.cp == mine.cp) group.push_back(r);
  }
  return group;
}

std::vector<int64_t> Topology::ReplicaGroupOf(int64_t rank) const {
  const Coordinates mine = CoordinatesOf(rank);
  std::vector<int64_t> group;
  for (int64_t r = 0; r < world_size(); ++r) {
    const Coordinates c = CoordinatesOf(r);
    if (c.tp == mine.tp && c.pp == mine.pp) group.push_back(r);
  }
  return group;
}

std::vector<std::vector<int64_t>> Topology::ReplicaGroups() const {
  std::vector<std::vector<int64_t>> groups;
  std::set<int64_t> covered;
  for (int64_t r = 0; r < world_size(); ++r) {
    if (covered.count(r)) continue;
    groups.push_back(ReplicaGroupOf(r));
    covered.insert(groups.back().begin(), groups.back().end());
  }
  return groups;
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
  std::vector<std::string> names;
  for (Dim d : order_) {
    if (d != Dim::kContext || dims_.cp > 1) names.push_back(Name(d));
  }
  return absl::StrJoin(names, "-");
}

std::string Topology::Table() const {
  const bool cp = dims_.cp > 1;
  std::string out = absl::StrFormat("world %d = %s, order %s (innermost first)\n rank   tp%s   pp   dp\n",
                                    world_size(), SizesLine(), order(), cp ? "   cp" : "");
  for (int64_t r = 0; r < world_size(); ++r) {
    Coordinates c = CoordinatesOf(r);
    absl::StrAppend(&out, absl::StrFormat("%5d %4d", r, c.tp), cp ? absl::StrFormat(" %4d", c.cp) : "",
                    absl::StrFormat(" %4d %4d\n", c.pp, c.dp));
  }
  return out;
}

std::string Topology::SizesLine() const {
  return dims_.cp > 1
             ? absl::StrFormat("tp %d x cp %d x pp %d x dp %d", dims_.tp, dims_.cp, dims_.pp, dims_.dp)
             : absl::StrFormat("tp %d x pp %d x dp %d", dims_.tp, dims_.pp, dims_.dp);
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
  std::string out = line("tp", Groups(Dim::kTensor));
  if (dims_.cp > 1) out += line("cp", Groups(Dim::kContext));
  out += line("pp", Groups(Dim::kPipeline)) + line("dp", Groups(Dim::kData));
  if (dims_.cp > 1) out += line("dp x cp", ReplicaGroups());
  return out + line("model", model) + line("embedding", embedding);
}

}  // namespace tessera::parallel
