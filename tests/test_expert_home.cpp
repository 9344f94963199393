// The expert home of mode parallax on one rank (src/experts/expert_home.hpp): masters start from
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
#include "experts/expert_home.hpp"           // defines: ExpertHome
#include "model/expert_slices.hpp"        // defines: expert_offset
#include "experts/expert_views.hpp"          // defines: ExpertViews

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
  ExpertHome home(cfg, model.layout(), mine, ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  // rank 0's views start from other weights; the message must replace them
  MoeModel<float> other(cfg.model, 1, 2);
  other.init_params(8);
  ExpertViews views(cfg, Topology::make(2, 1, 0, 0, 0, 2), ExpertSource::arena(cfg.model, model.layout(), other.params(Arena::EXPERTS)));
  for (float& w : home.masters()) w *= 1.5f;  // the masters have moved since the start
  const std::vector<uint8_t> msg = home.view_message(1);
  views.apply(msg.data(), msg.size());
  std::vector<float> W1(wsz), W3(wsz), W2(wsz), V1(wsz), V3(wsz), V2(wsz);
  for (auto id : mine) {  // every expert of the message is now the view of its master
    const float *m1, *m3, *m2;
    home.forward_weights(id.moe_layer, id.expert, &m1, &m3, &m2);
    ternary_view_from_master(m1, m3, m2, cfg.model.d_model, cfg.model.expert_hidden,
                             cpu::EXPERT_ACT_SWIGLU).dequantize(W1.data(), W3.data(), W2.data());
    views.dequantize(id.moe_layer, id.expert, V1.data(), V3.data(), V2.data());
    ASSERT_EQ(W1, V1);
    ASSERT_EQ(W3, V3);
    ASSERT_EQ(W2, V2);
  }
  // malformed messages are refused with a reason
  EXPECT_THROW(views.apply(msg.data(), msg.size() - 1), std::invalid_argument);
  auto extra = msg;
  extra.push_back(0);
  EXPECT_THROW(views.apply(extra.data(), extra.size()), std::invalid_argument);
  auto bad_id = msg;
  const int32_t big = 1000;
  std::memcpy(bad_id.data() + 4, &big, 4);
  EXPECT_THROW(views.apply(bad_id.data(), bad_id.size()), std::invalid_argument);
  // a message about rank 0's own experts is refused too
  ExpertHome own(cfg, model.layout(), experts_homed_at(topo, 0, cfg.model.moe_layers(), cfg.model.n_experts),
                 ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  const auto wrong = own.view_message(1);
  EXPECT_THROW(views.apply(wrong.data(), wrong.size()), std::invalid_argument);
  // the views are compact: 2-bit codes and a scale per output unit, ~1/16 of fp32
  EXPECT_LT(views.bytes(), (size_t)(model.layout().experts_size / 2 * 4) / 10);
}

TEST(ExpertHome, InitialViewsCoverTheOtherRanksExperts) {
  const Config cfg = tiny_parallax();
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(7);
  const Topology topo = Topology::make(2, 1, 0, 0, 0, 2);
  ExpertViews views(cfg, topo, ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  std::vector<float> W1(wsz), W3(wsz), W2(wsz), V1(wsz), V3(wsz), V2(wsz);
  const float* a = model.params(Arena::EXPERTS);
  for (int m = 0; m < cfg.model.moe_layers(); ++m)
    for (int e = 0; e < cfg.model.n_experts; ++e) {
      const bool mine = expert_home(topo, m, e, cfg.model.n_experts) == 0;
      ASSERT_EQ(views.remote(m, e), !mine) << "expert (" << m << ", " << e << ")";
      if (mine) continue;
      ternary_view_from_master(a + px::expert_offset(cfg.model, model.layout(), m, e, 0),
                               a + px::expert_offset(cfg.model, model.layout(), m, e, 1),
                               a + px::expert_offset(cfg.model, model.layout(), m, e, 2),
                               cfg.model.d_model, cfg.model.expert_hidden, cpu::EXPERT_ACT_SWIGLU)
          .dequantize(W1.data(), W3.data(), W2.data());
      views.dequantize(m, e, V1.data(), V3.data(), V2.data());
      ASSERT_EQ(W1, V1);
      ASSERT_EQ(W2, V2);
    }
  EXPECT_THROW(views.dequantize(0, 0, V1.data(), V3.data(), V2.data()), std::logic_error);
}

TEST(ExpertHome, UpdateIsOneAdamWStepOfTheMeanGradient) {
  Config cfg = tiny_parallax();
  cfg.train.grad_clip = 0;
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(3);
  const Topology topo = Topology::make(2, 1, 0, 0, 0, 2);
  ExpertHome home(cfg, model.layout(), experts_homed_at(topo, 0, cfg.model.moe_layers(), cfg.model.n_experts),
                  ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
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
                  ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
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
                  ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  ExpertViews views(cfg, topo0, ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  std::vector<float> H1(wsz), H3(wsz), H2(wsz), V1(wsz), V3(wsz), V2(wsz);
  // the island's views of the home's experts equal the home's surrogates bit for bit
  auto same = [&] {
    for (size_t i = 0; i < home.owned().size(); ++i) {
      home.surrogates()[i].dequantize(H1.data(), H3.data(), H2.data());
      views.dequantize(home.owned()[i].moe_layer, home.owned()[i].expert, V1.data(), V3.data(), V2.data());
      if (H1 != V1 || H3 != V3 || H2 != V2) return false;
    }
    return true;
  };
  EXPECT_TRUE(same()) << "the initial fits must agree";
  // move the masters by a structured change, then two view messages
  for (size_t i = 0; i < home.masters().size(); ++i)
    home.masters()[i] += 0.05f * (float)((i % wsz) % cfg.model.expert_hidden) / cfg.model.expert_hidden;
  auto err = [&] {  // relative distance of the island's view to the home's masters
    double num = 0, den = 0;
    for (auto id : home.owned()) {
      const float* m[3];
      home.forward_weights(id.moe_layer, id.expert, &m[0], &m[1], &m[2]);
      views.dequantize(id.moe_layer, id.expert, V1.data(), V3.data(), V2.data());
      const float* v[3] = {V1.data(), V3.data(), V2.data()};
      for (int k = 0; k < 3; ++k)
        for (size_t j = 0; j < wsz; ++j)
          num += std::pow(v[k][j] - m[k][j], 2), den += std::pow(m[k][j], 2);
    }
    return std::sqrt(num / den);
  };
  const double before = err();
  for (int step = 1; step <= 2; ++step) {
    const auto msg = home.view_message(step);
    views.apply(msg.data(), msg.size());
    EXPECT_TRUE(same()) << "step " << step;
  }
  EXPECT_LT(err(), 0.9 * before) << "before " << before;
}

// experts.ternary_native: the home computes (and the islands' views hold) the ternary form of
// each master, bit for bit, while the optimizer trains the fp32 master underneath (the latent
// weight: a gradient of the ternary weights is applied to it straight through).
TEST(ExpertHome, TernaryNativeComputesWithTheViewAndTrainsTheLatentMaster) {
  Config cfg = tiny_parallax();
  cfg.experts.ternary_native = true;
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(7);
  const Topology topo = Topology::make(2, 1, 0, 0, 1, 2);
  auto mine = experts_homed_at(topo, 1, cfg.model.moe_layers(), cfg.model.n_experts);
  ExpertHome home(cfg, model.layout(), mine, ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  ExpertViews views(cfg, Topology::make(2, 1, 0, 0, 0, 2), ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS)));
  const int d = cfg.model.d_model, h = cfg.model.expert_hidden;
  const size_t wsz = (size_t)d * h;
  auto expect_forward_is_the_view = [&](const char* when) {
    std::vector<float> F(3 * wsz), V(3 * wsz), T(3 * wsz);
    for (size_t i = 0; i < mine.size(); ++i) {
      const ExpertId id = mine[i];
      const float *f1, *f3, *f2;
      home.forward_weights(id.moe_layer, id.expert, &f1, &f3, &f2);
      const float* w = home.masters().data() + i * 3 * wsz;  // W1 | W3 | W2
      ternary_view_from_master(w, w + wsz, w + 2 * wsz, d, h, cpu::EXPERT_ACT_SWIGLU)
          .dequantize(T.data(), T.data() + wsz, T.data() + 2 * wsz);
      views.dequantize(id.moe_layer, id.expert, V.data(), V.data() + wsz, V.data() + 2 * wsz);
      std::copy(f1, f1 + wsz, F.begin());
      std::copy(f3, f3 + wsz, F.begin() + wsz);
      std::copy(f2, f2 + wsz, F.begin() + 2 * wsz);
      ASSERT_EQ(F, T) << when << ": expert (" << id.moe_layer << ", " << id.expert << ")";
      ASSERT_EQ(F, V) << when << ": the island's view differs from what the home computes with";
      ASSERT_NE(std::vector<float>(w, w + 3 * wsz), F) << when << ": the master is the latent weight";
    }
  };
  expect_forward_is_the_view("at start");
  const std::vector<float> before = home.masters();
  std::vector<float> g(wsz);
  for (size_t i = 0; i < mine.size(); ++i) {
    for (size_t j = 0; j < wsz; ++j) g[j] = std::sin(0.37f * (float)(j + 11 * i));
    home.add_expert_grad(mine[i].moe_layer, mine[i].expert, g.data(), g.data(), g.data());
  }
  home.update(1e-2, 1.0);
  EXPECT_NE(home.masters(), before);  // the latent masters were trained
  const std::vector<uint8_t> msg = home.view_message(1);
  views.apply(msg.data(), msg.size());
  expect_forward_is_the_view("after an update and a snapshot");
}

// A pipeline stage (topology.pipeline_stages = 2) holds the views of its own MoE layers alone;
// a worker's view message splits into the stages' parts (view_message_part), each of which
// its stage applies, and a stage refuses a view of another stage's layers.
TEST(ExpertViews, APipelineStageHoldsItsLayersAndTakesItsPartOfAViewMessage) {
  Config cfg = load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml",
                           {"train.mode=\"parallax\"", "model.n_layers=5", "topology.ranks_per_island=2",
                            "topology.pipeline_stages=2", "topology.expert_workers=1"});
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(7);
  const ExpertSource src = ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS));
  auto topo_of = [&](int rank) {
    Topology t = Topology::make(1, 2, 0, 1, rank, 3);
    t.pipeline_stages = 2;
    return t;
  };
  const Topology t0 = topo_of(0), t1 = topo_of(1), tw = topo_of(2);
  ExpertViews v0(cfg, t0, src), v1(cfg, t1, src);
  const int E = cfg.model.n_experts;
  // 5 layers, 1 dense: stage 0 holds layers [0, 2) = MoE layer 0, stage 1 layers [2, 5) = MoE 1..3
  for (int m = 0; m < cfg.model.moe_layers(); ++m)
    for (int e = 0; e < E; ++e) {
      EXPECT_EQ(v0.remote(m, e), m == 0) << m;
      EXPECT_EQ(v1.remote(m, e), m >= 1) << m;
    }
  EXPECT_EQ(3 * v0.bytes(), v1.bytes());
  ExpertHome home(cfg, model.layout(), experts_homed_at(tw, 2, cfg.model.moe_layers(), E), src);
  for (float& w : home.masters()) w *= 1.5f;
  const std::vector<uint8_t> msg = home.view_message(1);
  const auto p0 = view_message_part(msg, stage_moe_layers(0, 2, 5, 1, false));
  const auto p1 = view_message_part(msg, stage_moe_layers(1, 2, 5, 1, false));
  uint32_t n = 0, n0 = 0, n1 = 0;
  std::memcpy(&n, msg.data(), 4);
  std::memcpy(&n0, p0.data(), 4);
  std::memcpy(&n1, p1.data(), 4);
  EXPECT_EQ(n0, (uint32_t)E);
  EXPECT_EQ(n1, (uint32_t)(3 * E));
  EXPECT_EQ(n0 + n1, n);
  EXPECT_EQ(p0.size() + p1.size(), msg.size() + 4);  // (each part its own count)
  v0.apply(p0.data(), p0.size());
  v1.apply(p1.data(), p1.size());
  const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
  std::vector<float> W1(wsz), W3(wsz), W2(wsz), V1(wsz), V3(wsz), V2(wsz);
  for (int m = 0; m < cfg.model.moe_layers(); ++m) {  // every view is its master's snapshot now
    const float *m1, *m3, *m2;
    home.forward_weights(m, 3, &m1, &m3, &m2);
    ternary_view_from_master(m1, m3, m2, cfg.model.d_model, cfg.model.expert_hidden,
                             cpu::EXPERT_ACT_SWIGLU).dequantize(W1.data(), W3.data(), W2.data());
    (m == 0 ? v0 : v1).dequantize(m, 3, V1.data(), V3.data(), V2.data());
    ASSERT_EQ(W1, V1) << m;
    ASSERT_EQ(W2, V2) << m;
  }
  EXPECT_THROW(v0.apply(msg.data(), msg.size()), std::invalid_argument);  // (layers 1..3 too)
  EXPECT_THROW(v0.apply(p1.data(), p1.size()), std::invalid_argument);
}
