// libFuzzer target: one backbone push (wire/push_header.hpp + an encoded shard, sync/codec.hpp)
// as syncer 0 receives it from the learner of island 1, shard 1 (Syncer::on_push): push_problem,
// then decode (a malformed payload is a std::invalid_argument, the syncer's documented answer)
// and push_values_problem, then the merge and the outer Nesterov step (lr 0.7, momentum 0.9) on
// the unit's global shard (|theta| <= 0.5). The shard must stay finite and within what one step
// of bounded gradients can reach: a push that passed the checks poisons every island's backbone
// otherwise.
#include <cstring>
#include <stdexcept>
#include <vector>

#include "fuzz_receivers.hpp"      // defines: SyncerFixture, kPushSource, PX_FUZZ_REQUIRE
#include "sync/codec.hpp"          // defines: decode
#include "sync/outer_merge.hpp"    // defines: merge_outer, outer_nesterov
#include "sync/push_check.hpp"     // defines: push_problem, push_values_problem

using namespace px;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fuzz::SyncerFixture fx;
  if (!push_problem(data, size, fuzz::kPushSource, fx.topo, fx.plan, 0).empty()) return 0;
  PushHeader h;
  std::memcpy(&h, data, sizeof h);
  const int ranks = fx.topo.ranks_per_island;
  const size_t n = fx.plan.size(h.fragment);
  const size_t lo = FragmentPlan::shard_begin(n, h.shard, ranks), hi = FragmentPlan::shard_begin(n, h.shard + 1, ranks);
  const size_t m = hi - lo;
  PX_FUZZ_REQUIRE((size_t)h.n == m, "an accepted push has another length than its shard");
  std::vector<float> delta(m);
  try {
    decode((WireDtype)h.dtype, data + sizeof h, m, delta.data());
  } catch (const std::invalid_argument&) {
    return 0;
  }
  if (!push_values_problem(delta.data(), m).empty()) return 0;
  for (bool rda : {false, true}) {
    std::vector<float> merged(m), theta = fuzz::weights(m, 31), mom(m, 0.f);
    merge_outer(fx.plan, h.fragment, lo, hi, {delta.data()}, {1.0}, rda, merged.data());
    outer_nesterov(theta.data(), mom.data(), merged.data(), m, 0.7, 0.9);
    PX_FUZZ_REQUIRE(fuzz::all_within(theta, 0.5f + 0.7f * 1.9f * kOuterGradientBound * 1.01f),
                    "an accepted push made the global shard non-finite or out of bounds");
  }
  return 0;
}
