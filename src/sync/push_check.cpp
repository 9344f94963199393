// defines: push_problem, push_values_problem
#include "sync/push_check.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "sync/codec.hpp"  // defines: encoded_bytes, WireDtype

namespace px {

std::string push_problem(const uint8_t* msg, size_t bytes, int source, const Topology& topo,
                         std::span<const FragmentPlan> plans, int syncer) {
  PushHeader h;
  if (bytes < sizeof h) return fmt::format("{} bytes, shorter than its {}-byte header", bytes, sizeof h);
  std::memcpy(&h, msg, sizeof h);
  const int ranks = topo.ranks_per_island;
  if (h.island < 0 || h.island >= topo.islands)
    return fmt::format("island {} (the run has {} islands)", h.island, topo.islands);
  if (h.fragment < 0 || h.fragment >= plans[0].count())
    return fmt::format("fragment {} (the run has {} fragments)", h.fragment, plans[0].count());
  if (h.shard < 0 || h.shard >= ranks)
    return fmt::format("shard {} (islands have {} ranks)", h.shard, ranks);
  const int D = ranks / (int)plans.size();  // (ranks per pipeline stage)
  const FragmentPlan& plan = plans[h.shard / D];
  if (h.dtype < 0 || h.dtype > (int32_t)WireDtype::TERNARY) return fmt::format("dtype {}", h.dtype);
  if ((h.fragment * ranks + h.shard) % topo.syncers != syncer)
    return fmt::format("unit {} belongs to syncer {}", h.fragment * ranks + h.shard,
                       (h.fragment * ranks + h.shard) % topo.syncers);
  if (source != topo.learner_rank(h.island, h.shard))
    return fmt::format("sent by rank {}, not by the learner of island {} shard {}", source,
                       h.island, h.shard);
  const size_t n = plan.size(h.fragment);
  const int k = h.shard % D;
  const size_t m = FragmentPlan::shard_begin(n, k + 1, D) - FragmentPlan::shard_begin(n, k, D);
  if (h.n != (int64_t)m) return fmt::format("n = {}, the shard has {} values", h.n, m);
  const size_t want = sizeof h + encoded_bytes((WireDtype)h.dtype, m);
  if (bytes != want) return fmt::format("{} bytes, the shard in its dtype needs {}", bytes, want);
  if (h.tokens < 0 || h.step < 0) return fmt::format("step {}, tokens {}", h.step, h.tokens);
  return "";
}

std::string push_values_problem(const float* values, size_t n, size_t first_index) {
  for (size_t i = 0; i < n; ++i)
    if (!(std::fabs(values[i]) <= kOuterGradientBound))
      return fmt::format("value {} at index {} (outer gradients are finite and at most {:g} in magnitude)",
                         values[i], first_index + i, kOuterGradientBound);
  return "";
}

}  // namespace px
