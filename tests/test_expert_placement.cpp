// Expert homes (src/parallel/expert_placement.hpp): every expert has exactly one home of the
// right role, homes are balanced, and the DESIGN §3 rules (island e mod I; worker g mod W).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "parallel/expert_placement.hpp"  // defines: expert_home, experts_homed_at

using namespace px;

namespace {
Topology topo(int I, int R, int S, int W) { return Topology::make(I, R, S, W, 0, I * R + S + W); }
}  // namespace

TEST(ExpertPlacement, IslandHomesFollowExpertModIslandsAndAreBalanced) {
  for (auto [I, R, S] : {std::tuple{1, 1, 0}, {2, 2, 0}, {3, 2, 1}, {4, 1, 2}, {2, 3, 0}}) {
    Topology t = topo(I, R, S, 0);
    const int M = 3, E = 16;
    std::map<int, int> load;
    for (int m = 0; m < M; ++m)
      for (int e = 0; e < E; ++e) {
        int h = expert_home(t, m, e, E);
        ASSERT_GE(h, 0);
        ASSERT_LT(h, t.learners()) << "homes are learners when W = 0";
        EXPECT_EQ(h / R, e % I) << "expert " << e << " lives on island e mod I";
        ++load[h];
      }
    int total = 0, lo = 1 << 30, hi = 0;
    for (int r = 0; r < t.world_size; ++r) {
      auto mine = experts_homed_at(t, r, M, E);
      EXPECT_EQ((int)mine.size(), load.count(r) ? load[r] : 0);
      for (auto id : mine) EXPECT_EQ(expert_home(t, id.moe_layer, id.expert, E), r);
      total += (int)mine.size();
      if (r < t.learners()) lo = std::min(lo, (int)mine.size()), hi = std::max(hi, (int)mine.size());
      else EXPECT_TRUE(mine.empty()) << "syncers home nothing";
    }
    EXPECT_EQ(total, M * E) << "every expert exactly one home";
    // I divides E here except I = 3: then islands differ by one expert per layer.
    EXPECT_LE(hi - lo, E % I == 0 ? 1 : M + 1) << "I=" << I << " R=" << R;
  }
}

TEST(ExpertPlacement, WorkersHomeEveryExpertWhenPresent) {
  Topology t = topo(2, 2, 1, 3);
  const int M = 2, E = 8;
  for (int m = 0; m < M; ++m)
    for (int e = 0; e < E; ++e) EXPECT_EQ(expert_home(t, m, e, E), t.worker_rank((m * E + e) % 3));
  for (int r = 0; r < t.learners() + t.syncers; ++r)
    EXPECT_TRUE(experts_homed_at(t, r, M, E).empty());
  EXPECT_EQ(experts_homed_at(t, t.worker_rank(0), M, E).size(), 6u);
  EXPECT_THROW(expert_home(t, 0, 8, E), std::invalid_argument);
  EXPECT_THROW(expert_home(t, -1, 0, E), std::invalid_argument);
}
