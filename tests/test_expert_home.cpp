// The expert home of mode parallax on one rank (src/sync/expert_home.hpp): masters start from
// the arena, view messages carry exactly the ternary views of the masters (or low-rank deltas
// that keep home and island surrogates bit-identical) and ExpertViews writes them into another
// rank's arena, malformed messages are refused, initial views leave a rank's own experts alone,
// an update with only local gradients is one AdamW step, adapter deltas fold token-weighted.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "config/config.hpp"              // defines: Config, load_config
#include "model/moe_model.hpp"            // defines: MoeModel
#include "model/ternary_view.hpp"         // defines: ternary_view_from_master
#include "ops/cpu/cpu_ops.hpp"            // defines: adamw_update
#include "parallel/expert_placement.hpp"  // defines: experts_homed_at
#include "sync/expert_home.hpp"           // defines: ExpertHome
#include "model/expert_slices.hpp"        // defines: expert_offset
#include "sync/expert_views.hpp"          // defines: ExpertViews

using namespace px;

namespace {

Config tiny_parallax() {
  return load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml",
                     {"train.mode=\"parallax\"", "topology.islands=2", "model.n_layers=3"});
}

size_t w1_off(const Config& c, const ParamLayout& L, int m, int e) {
  return L.layers[c.model.dense_layers + m].expert_w1 + (size_t)e * c.model.d_model * c.model.expert_hidden;
}

}  // namespace

TEST(ExpertHome, SnapshotCarriesTheTernaryViewsOfTheMasters) {
  const Config cfg = tiny_parallax();
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(7);
  const Topology topo = Topology::make(2, 1, 0, 0, 1, 2);
  auto mine = experts_homed_at(topo, 1, cfg.model.moe_layers(), cfg.model.n_experts);
  ASSERT_EQ(mine.size(), (size_t)cfg.model.moe_layers() * cfg.model.n_experts / 2);
  ExpertHome home(cfg, model.layout(), mine, model.params(Arena::EXPERTS));
  const size_t n = model.layout().experts_size, wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  // rank 0's arena: -99 everywhere except its own experts (ExpertViews writes the others)
  std::vector<float> other(n, -99.f);
  const Topology topo0 = Topology::make(2, 1, 0, 0, 0, 2);
  ExpertViews views(cfg, model.layout(), topo0, other.data());
  std::fill(other.begin(), other.end(), -99.f);
  const std::vector<uint8_t> msg = home.view_message(1);
  views.apply(msg.data(), msg.size(), other.data());
  for (auto id : mine) {  // every homed expert became the dequantized view of its master
    const float* m = model.params(Arena::EXPERTS);
    const size_t o1 = w1_off(cfg, model.layout(), id.moe_layer, id.expert);
    const auto& Lo = model.layout().layers[cfg.model.dense_layers + id.moe_layer];
    const size_t o3 = Lo.expert_w3 + id.expert * wsz, o2 = Lo.expert_w2 + id.expert * wsz;
    TernaryExpertView v = ternary_view_from_master(m + o1, m + o3, m + o2, cfg.model.d_model,
                                                   cfg.model.expert_hidden, cpu::EXPERT_ACT_SWIGLU);
    std::vector<float> W1(wsz), W3(wsz), W2(wsz);
    v.dequantize(W1.data(), W3.data(), W2.data());
    ASSERT_EQ(0, std::memcmp(W1.data(), other.data() + o1, wsz * 4));
    ASSERT_EQ(0, std::memcmp(W3.data(), other.data() + o3, wsz * 4));
    ASSERT_EQ(0, std::memcmp(W2.data(), other.data() + o2, wsz * 4));
  }
  // experts homed elsewhere are untouched
  auto theirs = experts_homed_at(topo, 0, cfg.model.moe_layers(), cfg.model.n_experts);
  EXPECT_EQ(other[w1_off(cfg, model.layout(), theirs[0].moe_layer, theirs[0].expert)], -99.f);
  // malformed messages are refused with a reason
  EXPECT_THROW(views.apply(msg.data(), msg.size() - 1, other.data()), std::invalid_argument);
  auto extra = msg;
  extra.push_back(0);
  EXPECT_THROW(views.apply(extra.data(), extra.size(), other.data()), std::invalid_argument);
  auto bad_id = msg;
  const int32_t big = 1000;
  std::memcpy(bad_id.data() + 4, &big, 4);
  EXPECT_THROW(views.apply(bad_id.data(), bad_id.size(), other.data()), std::invalid_argument);
  // a message about rank 0's own experts is refused too
  ExpertHome own(cfg, model.layout(), experts_homed_at(topo, 0, cfg.model.moe_layers(), cfg.model.n_experts),
                 model.params(Arena::EXPERTS));
  const auto wrong = own.view_message(1);
  EXPECT_THROW(views.apply(wrong.data(), wrong.size(), other.data()), std::invalid_argument);
}

TEST(ExpertHome, InitialViewsSpareTheRanksOwnExperts) {
  const Config cfg = tiny_parallax();
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(7);
  const std::vector<float> before(model.params(Arena::EXPERTS),
                                  model.params(Arena::EXPERTS) + model.layout().experts_size);
  const Topology topo = Topology::make(2, 1, 0, 0, 0, 2);
  ExpertViews views(cfg, model.layout(), topo, model.params(Arena::EXPERTS));
  for (int m = 0; m < cfg.model.moe_layers(); ++m)
    for (int e = 0; e < cfg.model.n_experts; ++e) {
      const size_t o = w1_off(cfg, model.layout(), m, e);
      const bool mine = expert_home(topo, m, e, cfg.model.n_experts) == 0;
      EXPECT_EQ(model.params(Arena::EXPERTS)[o] == before[o] && model.params(Arena::EXPERTS)[o + 1] == before[o + 1] &&
                    model.params(Arena::EXPERTS)[o + 2] == before[o + 2],
                mine)
          << "expert (" << m << ", " << e << ")";
    }
}

TEST(ExpertHome, UpdateIsOneAdamWStepOfTheMeanGradient) {
  Config cfg = tiny_parallax();
  cfg.train.grad_clip = 0;
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(3);
  const Topology topo = Topology::make(2, 1, 0, 0, 0, 2);
  ExpertHome home(cfg, model.layout(), experts_homed_at(topo, 0, cfg.model.moe_layers(), cfg.model.n_experts),
                  model.params(Arena::EXPERTS));
  std::vector<float> g(model.layout().experts_size);
  for (size_t i = 0; i < g.size(); ++i) g[i] = 0.01f * (float)((i * 7919) % 101) - 0.5f;
  const size_t wsz0 = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  for (int rep = 0; rep < 2; ++rep)  // two contributions, mean over divisor 2 = g
    for (auto id : home.owned()) {
      const auto& Lo = model.layout().layers[cfg.model.dense_layers + id.moe_layer];
      home.add_expert_grad(id.moe_layer, id.expert, &g[Lo.expert_w1 + id.expert * wsz0],
                           &g[Lo.expert_w3 + id.expert * wsz0], &g[Lo.expert_w2 + id.expert * wsz0]);
    }
  EXPECT_THROW(home.add_expert_grad(0, 1, g.data(), g.data(), g.data()), std::invalid_argument)
      << "expert (0, 1) is homed at rank 1";
  std::vector<float> p = home.masters(), want = p, mm(p.size()), vv(p.size()), gg(p.size());
  // the packed gradient in the home's order: per expert W1 | W3 | W2
  const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  for (size_t i = 0; i < home.owned().size(); ++i) {
    const auto& Lo = model.layout().layers[cfg.model.dense_layers + home.owned()[i].moe_layer];
    const int e = home.owned()[i].expert;
    std::memcpy(&gg[i * 3 * wsz], &g[Lo.expert_w1 + e * wsz], wsz * 4);
    std::memcpy(&gg[i * 3 * wsz + wsz], &g[Lo.expert_w3 + e * wsz], wsz * 4);
    std::memcpy(&gg[i * 3 * wsz + 2 * wsz], &g[Lo.expert_w2 + e * wsz], wsz * 4);
  }
  cpu::adamw_update(want.data(), gg.data(), mm.data(), vv.data(), want.size(), 1e-2f, 0.9f, 0.95f,
                    1e-8f, (float)cfg.train.weight_decay, 1);
  home.update(1e-2, 2.0);
  EXPECT_EQ(home.masters(), want);
  EXPECT_NE(home.masters(), p);
  for (float x : home.grad_sum()) ASSERT_EQ(x, 0.f);
  EXPECT_EQ(home.steps_taken(), 1);
}

// Adapter deltas: the home adds the token-weighted mean of the deltas A B it received.
TEST(ExpertHome, FoldsTheTokenWeightedMeanOfAdapterDeltas) {
  const Config cfg = tiny_parallax();
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(5);
  const Topology topo = Topology::make(2, 1, 0, 0, 0, 2);
  ExpertHome home(cfg, model.layout(), experts_homed_at(topo, 0, cfg.model.moe_layers(), cfg.model.n_experts),
                  model.params(Arena::EXPERTS));
  const int d = cfg.model.d_model, h = cfg.model.expert_hidden;
  const ExpertId id = home.owned()[1];
  // rank-1 deltas: A = a * ones, B = ones, so every weight of the expert moves by a
  auto message = [&](float a, int64_t tokens) {
    std::vector<uint8_t> b(4);
    const uint32_t one = 1;
    std::memcpy(b.data(), &one, 4);
    auto put = [&](const void* p, size_t n) {
      const size_t o = b.size();
      b.resize(o + n);
      std::memcpy(b.data() + o, p, n);
    };
    const int32_t head[2] = {id.moe_layer, id.expert}, r = 1;
    put(head, 8);
    put(&tokens, 8);
    put(&r, 4);
    for (auto [in, out] : {std::pair{d, h}, {d, h}, {h, d}}) {
      std::vector<float> A(in, a), B(out, 1.f);
      put(A.data(), 4 * A.size());
      put(B.data(), 4 * B.size());
    }
    return b;
  };
  const std::vector<float> before = home.masters();
  auto m1 = message(0.1f, 1), m2 = message(0.5f, 3);
  home.fold_deltas(m1.data(), m1.size());
  home.fold_deltas(m2.data(), m2.size());
  home.apply_deltas();
  const size_t per = home.per_expert();
  for (size_t i = 0; i < home.masters().size(); ++i) {
    const bool moved = i / per == 1;  // owned()[1] only
    EXPECT_NEAR(home.masters()[i] - before[i], moved ? 0.4f : 0.f, 1e-6f) << i;
  }
  auto truncated = message(0.1f, 1);
  truncated.pop_back();
  EXPECT_THROW(home.fold_deltas(truncated.data(), truncated.size()), std::invalid_argument);
}

// View "lowrank": the home fits the same initial surrogates as the islands; each view message
// carries deltas that the home and the islands add identically, so the islands' arena equals
// the home's surrogates bit for bit, and the surrogate moves towards the changed masters.
TEST(ExpertHome, LowrankDeltasKeepHomeAndIslandSurrogatesIdentical) {
  Config cfg = tiny_parallax();
  cfg.experts.view = ViewKind::LOWRANK;
  cfg.experts.surrogate_rank = 8;
  cfg.experts.update_rank = 4;
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(11);
  const Topology topo = Topology::make(2, 1, 0, 0, 1, 2), topo0 = Topology::make(2, 1, 0, 0, 0, 2);
  ExpertHome home(cfg, model.layout(), experts_homed_at(topo, 1, cfg.model.moe_layers(), cfg.model.n_experts),
                  model.params(Arena::EXPERTS));
  std::vector<float> island(model.params(Arena::EXPERTS), model.params(Arena::EXPERTS) + model.layout().experts_size);
  ExpertViews views(cfg, model.layout(), topo0, island.data());
  ASSERT_EQ(views.factors().size(), home.surrogate_factors().size());
  EXPECT_EQ(views.factors(), home.surrogate_factors()) << "the initial fits must agree";
  // move the masters by a low-rank change, then two view messages
  const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  for (size_t i = 0; i < home.masters().size(); ++i)
    home.masters()[i] += 0.05f * (float)((i % wsz) % cfg.model.expert_hidden) / cfg.model.expert_hidden;
  auto err = [&] {  // relative distance of the island's view to the home's masters
    double num = 0, den = 0;
    std::vector<float> mine(island.size());
    home.write_masters(mine.data());
    for (auto id : home.owned())
      for (int k = 0; k < 3; ++k) {
        const size_t o = px::expert_offset(cfg.model, model.layout(), id.moe_layer, id.expert, k);
        for (size_t j = 0; j < wsz; ++j)
          num += std::pow(island[o + j] - mine[o + j], 2), den += std::pow(mine[o + j], 2);
      }
    return std::sqrt(num / den);
  };
  const double before = err();
  for (int step = 1; step <= 2; ++step) {
    const auto msg = home.view_message(step);
    views.apply(msg.data(), msg.size(), island.data());
    EXPECT_EQ(views.factors(), home.surrogate_factors()) << "step " << step;
  }
  EXPECT_LT(err(), 0.9 * before) << "before " << before;
}
