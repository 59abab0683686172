// Bucket layout of the flat buffers and the static bytes it implies (bucket_layout.h).
#include "parallel/data_parallel/bucket_layout.h"

#include <algorithm>

namespace tessera::parallel {
namespace {

// Whether `a` is laid out as one run with `b`, the parameter after it.
bool JoinsNext(const FlatParameter& a, const FlatParameter& b) {
  return a.fuse_with_next && a.decay == b.decay && a.late == b.late && a.unit == b.unit;
}

}  // namespace

FlatLayout LayOutFlatBuffers(const std::vector<FlatParameter>& params, int dp, double bucket_mb,
                             bool split_units) {
  // The parameters of each bucket: the reverse of the order of use, cut after about bucket_mb,
  // a run of fused parameters taken whole and in its own order.
  std::vector<std::vector<int>> groups;
  const int64_t bucket_elements = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1048576.0 / 4));
  int64_t in_group = 0;
  for (int last = static_cast<int>(params.size()) - 1; last >= 0;) {
    int first = last;
    while (first > 0 && JoinsNext(params[first - 1], params[first])) --first;
    const int next = first - 1;
    if (params[last].late) {
      last = next;
      continue;
    }
    const bool new_unit =
        split_units && !groups.empty() && params[groups.back().back()].unit != params[first].unit;
    if (groups.empty() || in_group >= bucket_elements || new_unit) {
      groups.emplace_back();
      in_group = 0;
    }
    for (int i = first; i <= last; ++i) {
      groups.back().push_back(i);
      in_group += params[i].numel;
    }
    last = next;
  }
  const size_t late_group = groups.size();
  std::vector<int> late;
  for (int i = 0; i < static_cast<int>(params.size()); ++i) {
    if (params[i].late) late.push_back(i);
  }
  if (!late.empty()) groups.push_back(late);

  FlatLayout layout;
  layout.param_offset.assign(params.size(), 0);
  layout.param_bucket.assign(params.size(), -1);
  for (size_t g = 0; g < groups.size(); ++g) {
    BucketSpan b;
    b.late = g == late_group;
    b.unit = b.late || !split_units ? -1 : params[groups[g].front()].unit;
    std::stable_partition(groups[g].begin(), groups[g].end(), [&](int i) { return params[i].decay; });
    b.params = groups[g];
    b.begin = layout.total;
    b.shard_begin = layout.shard_total;
    for (int i : b.params) {
      layout.param_bucket[i] = static_cast<int>(g);
      layout.param_offset[i] = b.begin + b.numel;
      b.numel += params[i].numel;
      if (params[i].decay) b.decayed += params[i].numel;
    }
    b.padded = (b.numel + dp - 1) / dp * dp;
    layout.total += b.padded;
    layout.shard_total += b.padded / dp;
    layout.buckets.push_back(std::move(b));
  }
  return layout;
}

StaticBytes StaticBytesOf(const FlatLayout& layout, int zero, bool bf16_params) {
  const int64_t all = layout.total, owned = zero == 0 ? layout.total : layout.shard_total;
  StaticBytes bytes;
  bytes.weights = (bf16_params ? 2 : 4) * all;
  if (zero == 3) {
    int64_t late = 0;
    for (const BucketSpan& b : layout.buckets) late += b.late ? b.padded : 0;
    bytes.weights = (bf16_params ? 2 : 4) * (layout.shard_total + late);
  }
  bytes.master = bf16_params ? 4 * owned : 0;
  bytes.moments = 8 * owned;
  bytes.grads = zero == 0 ? 4 * all : zero == 1 ? 4 * all + 4 * owned : 4 * owned;
  return bytes;
}

int64_t GatheredUnitBound(const FlatLayout& layout, int prefetch, bool tied_head, bool bf16_params) {
  std::vector<int64_t> unit_elements;
  for (const BucketSpan& b : layout.buckets) {
    if (b.late || b.unit < 0) continue;
    if (static_cast<int>(unit_elements.size()) <= b.unit) unit_elements.resize(b.unit + 1, 0);
    unit_elements[b.unit] += b.padded;
  }
  const int units = static_cast<int>(unit_elements.size());
  const int window = std::min(units, prefetch + 2);
  int64_t worst = 0;
  for (int first = 0; first + window <= units; ++first) {
    int64_t sum = 0;
    for (int u = first; u < first + window; ++u) sum += unit_elements[u];
    if (tied_head && units > 0 && first > 0) sum += unit_elements[0];
    worst = std::max(worst, sum);
  }
  return (bf16_params ? 2 : 4) * worst;
}

}  // namespace tessera::parallel
