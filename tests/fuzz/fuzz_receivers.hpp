#pragma once
// The small receivers the fuzz targets feed (and fuzz_seeds.cpp writes valid messages for): a
// home of two experts for sketches and bundles, a learner's current low-rank view for view
// messages, a syncer of a tiny model for pushes. Sizes are small so that a valid message is a
// few hundred bytes and libFuzzer can reach every check. Weights are deterministic and of the
// size trained weights have (|w| <= 0.5), inputs |x| <= 1.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "model/lowrank_view.hpp"   // defines: LowrankExpertView, lowrank_view_from_master
#include "model/param_layout.hpp"   // defines: ParamLayout
#include "parallel/topology.hpp"    // defines: Topology
#include "sketch/sketch_home.hpp"   // defines: SketchHome, HomeExpertSlot
#include "sync/fragments.hpp"       // defines: FragmentPlan
#include "util/hash_rng.hpp"        // defines: uniform01

// A property the receiver relies on failed: print it and abort (libFuzzer keeps the input).
#define PX_FUZZ_REQUIRE(cond, what)                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "fuzz: %s (%s) at %s:%d\n", what, #cond, __FILE__, __LINE__); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace px::fuzz {

// Every |x| <= bound (NaN fails).
inline bool all_within(std::span<const float> v, float bound) {
  for (float x : v)
    if (!(std::fabs(x) <= bound)) return false;
  return true;
}
inline bool all_finite(std::span<const float> v) { return all_within(v, FLT_MAX); }

// n values uniform in [-scale, scale), a function of the seed only.
inline std::vector<float> weights(size_t n, uint64_t seed, float scale = 0.5f) {
  std::vector<float> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = (float)(scale * (2 * uniform01(seed, i) - 1));
  return w;
}

// ---- sketches: a home of experts (1, 0) and (1, 1) with d = 8, h = 16, swiglu ------------------
inline constexpr int kD = 8, kH = 16;
inline constexpr cpu::ExpertAct kAct = cpu::EXPERT_ACT_SWIGLU;
inline constexpr SketchKey kKey{0x0123456789abcdefull, 0xfedcba9876543210ull};
inline constexpr int kMaxRows = 16, kMaxStaleness = 4;
inline constexpr int64_t kHomeStep = 10;
inline constexpr int kHomedExperts[2][2] = {{1, 0}, {1, 1}};  // (moe layer, expert)

struct HomeFixture {
  std::vector<float> w[2][3], g[2][3];  // per expert: W1, W3 [d, h], W2 [h, d] and their gradients
  SketchHome home;

  HomeFixture() : home(kD, kH, kAct, kKey, kMaxRows, kMaxStaleness, slots()) {}

  // Every accumulated gradient is finite.
  bool gradients_finite() const {
    for (const auto& expert : g)
      for (const auto& m : expert)
        if (!all_finite(m)) return false;
    return true;
  }

 private:
  std::vector<HomeExpertSlot> slots() {
    std::vector<HomeExpertSlot> s;
    for (int x = 0; x < 2; ++x) {
      for (int k = 0; k < 3; ++k) {
        w[x][k] = weights((size_t)kD * kH, 10 * x + k);
        g[x][k].assign((size_t)kD * kH, 0.f);
      }
      s.push_back({kHomedExperts[x][0], kHomedExperts[x][1], w[x][0].data(), w[x][1].data(), w[x][2].data(),
                   g[x][0].data(), g[x][1].data(), g[x][2].data()});
    }
    return s;
  }
};

// ---- views: a learner's expert of d = 8, h = 16, swiglu; its low-rank view has rank 4 -----------
inline constexpr int kViewRank = 4, kDeltaRank = 2;
inline constexpr int kRows = 4;  // rows of the fixed input the view's forward runs on

struct ViewFixture {
  std::vector<float> master[3] = {weights((size_t)kD * kH, 21), weights((size_t)kD * kH, 22),
                                  weights((size_t)kH * kD, 23)};
  LowrankExpertView lowrank =
      lowrank_view_from_master(master[0].data(), master[1].data(), master[2].data(), kD, kH, kAct, kViewRank, 7);
  std::vector<float> x = weights((size_t)kRows * kD, 24, 1.f);
};

// ---- pushes: syncer 0 of 2 islands x 2 ranks, 2 fragments of a tiny diloco model -------------------
inline ModelConfig tiny_model() {
  ModelConfig c;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.vocab = 16;
  c.seq_len = 8;
  c.n_experts = 2;
  c.top_k = 1;
  c.expert_hidden = 8;
  c.dense_hidden = 8;
  return c;
}

inline Topology syncer_topology() {
  Topology t;
  t.islands = 2;
  t.ranks_per_island = 2;
  t.syncers = 1;
  t.world_size = 5;
  t.world_rank = 4;
  t.role = RoleKind::SYNCER;
  t.syncer_index = 0;
  return t;
}

inline constexpr int kPushSource = 3;  // the learner of island 1, shard 1
inline constexpr int kPushIsland = 1, kPushShard = 1;

struct SyncerFixture {
  ParamLayout layout{tiny_model()};
  FragmentPlan plan{layout, 2};
  Topology topo = syncer_topology();
};

}  // namespace px::fuzz
