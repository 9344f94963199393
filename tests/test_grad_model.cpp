// Finite-difference checks (double precision) of the layer kinds and the full model loss
// (cross-entropy + Switch aux loss), covering router/gate and routed/shared expert grads.
#include <gtest/gtest.h>

#include <tuple>

#include "grad_check.hpp"
#include "model/bump_arena.hpp"
#include "model/layers.hpp"
#include "model/moe_model.hpp"
#include "param_names.hpp"  // defines: PrintTo of config enums, test::name_of

using namespace px;
using px::test::dot;
using px::test::fd_rel_error;
using px::test::randn;

constexpr double kTol = 1e-5;

TEST(GradLayers, AttentionBlock) {
  std::mt19937_64 rng(21);
  const AttnDims dm{2, 5, 2, 4};
  const int N = dm.N(), d = dm.d();
  auto x = randn(N * d, rng), g = randn(d, rng), wq = randn(d * d, rng, 0.4),
       wk = randn(d * d, rng, 0.4), wv = randn(d * d, rng, 0.4), wo = randn(d * d, rng, 0.4),
       w = randn(N * d, rng);
  std::vector<double> buf(N * d * 6 + N + dm.B * dm.H * dm.Tn * dm.Tn), h(N * d), dx(N * d);
  BumpArena<double> ar(buf);
  AttentionActs<double> a{ar.take(N * d), ar.take(N), ar.take(N * d), ar.take(N * d),
                          ar.take(N * d), ar.take(dm.B * dm.H * dm.Tn * dm.Tn), ar.take(N * d)};
  std::vector<double> sbuf(N * d * 6);
  Scratch<double> s{};
  for (int i = 0; i < 6; ++i) s.nd[i] = sbuf.data() + i * N * d;
  std::vector<double> dg(d, 0.0), dwq(d * d, 0.0), dwk(d * d, 0.0), dwv(d * d, 0.0),
      dwo(d * d, 0.0);
  auto loss = [&] {
    attention_block_forward(h.data(), a, x.data(), g.data(), wq.data(), wk.data(), wv.data(),
                            wo.data(), dm);
    return dot(w, h.data());
  };
  loss();
  attention_block_backward(dx.data(), dg.data(), dwq.data(), dwk.data(), dwv.data(), dwo.data(),
                           w.data(), a, x.data(), g.data(), wq.data(), wk.data(), wv.data(),
                           wo.data(), dm, s);
  EXPECT_LT(fd_rel_error(x, dx, loss), kTol);
  EXPECT_LT(fd_rel_error(g, dg, loss), kTol);
  EXPECT_LT(fd_rel_error(wq, dwq, loss), kTol);
  EXPECT_LT(fd_rel_error(wk, dwk, loss), kTol);
  EXPECT_LT(fd_rel_error(wv, dwv, loss), kTol);
  EXPECT_LT(fd_rel_error(wo, dwo, loss), kTol);
}

// (expert_act, balance, n_shared)
class GradModel : public ::testing::TestWithParam<std::tuple<ExpertActKind, BalanceKind, int>> {};

TEST_P(GradModel, FullLossAllParameters) {
  ModelConfig c;
  c.d_model = 8;
  c.n_layers = 3;
  c.n_heads = 2;
  c.vocab = 11;
  c.seq_len = 5;
  c.dense_layers = 1;
  c.n_experts = 4;
  c.top_k = 2;
  c.n_shared = std::get<2>(GetParam());
  c.expert_hidden = 6;
  c.dense_hidden = 10;
  c.expert_act = std::get<0>(GetParam());
  c.balance = std::get<1>(GetParam());
  c.aux_alpha = 0.3;  // large, so a wrong aux gradient is visible
  const int B = 2, T = c.seq_len;
  MoeModel<double> m(c, B, T);
  m.init_params(5);
  // scale weights up from the 0.02 init so top-k decisions have clear margins and
  // every term of the gradient is large enough to be seen
  std::mt19937_64 rng(77);
  for (Arena ar : {Arena::BACKBONE, Arena::EXPERTS}) {
    std::normal_distribution<double> nd(0.0, 0.4);
    double* p = m.params(ar);
    for (size_t i = 0; i < m.layout().size(ar); ++i) p[i] += nd(rng);
  }
  if (c.balance == BalanceKind::BIAS)
    for (auto& b : m.router_bias()) b = std::normal_distribution<double>(0, 0.05)(rng);
  std::vector<int32_t> in(B * T), tg(B * T);
  for (int i = 0; i < B * T; ++i) in[i] = (i * 7 + 3) % c.vocab, tg[i] = (i * 5 + 1) % c.vocab;
  auto loss = [&] { return m.forward(in.data(), tg.data()); };
  const double l0 = loss();
  if (c.balance == BalanceKind::AUX) {
    EXPECT_GT(m.last_aux(), 0.0);
  } else {
    EXPECT_EQ(m.last_aux(), 0.0);
  }
  EXPECT_NEAR(l0, m.last_ce() + m.last_aux(), 1e-12);
  m.zero_grad();
  m.backward();
  for (Arena ar : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = m.layout().size(ar);
    std::vector<double> g(m.grads(ar), m.grads(ar) + n);
    for (const ParamSpec& s : m.layout().specs) {
      if (s.arena != ar) continue;
      std::vector<double> gs(g.begin() + s.offset, g.begin() + s.offset + s.size);
      const double err = fd_rel_error(m.params(ar) + s.offset, s.size, gs, loss);
      EXPECT_LT(err, kTol) << s.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    GradVariants, GradModel,
    ::testing::Values(std::make_tuple(ExpertActKind::SWIGLU, BalanceKind::AUX, 1),
                      std::make_tuple(ExpertActKind::RELU2, BalanceKind::AUX, 1),
                      std::make_tuple(ExpertActKind::SWIGLU, BalanceKind::BIAS, 2),
                      std::make_tuple(ExpertActKind::SWIGLU, BalanceKind::AUX, 0)),
    [](const auto& info) {  // e.g. swiglu_aux_shared1
      return test::name_of(std::get<0>(info.param)) + "_" + test::name_of(std::get<1>(info.param)) + "_shared" +
             std::to_string(std::get<2>(info.param));
    });

TEST(GradModelBias, UpdateMovesTowardBalance) {
  ModelConfig c;
  c.d_model = 8, c.n_layers = 2, c.n_heads = 2, c.vocab = 11, c.seq_len = 6, c.n_experts = 4;
  c.balance = BalanceKind::BIAS;
  MoeModel<double> m(c, 2, 6);
  m.init_params(3);
  std::vector<int32_t> in(12);
  for (int i = 0; i < 12; ++i) in[i] = i % 11;
  m.forward(in.data(), in.data());
  const auto counts = m.expert_counts();
  m.update_router_bias(counts);
  double mean = 0;
  for (int e = 0; e < 4; ++e) mean += counts[e] / 4.0;
  for (int e = 0; e < 4; ++e) {
    if (counts[e] > mean) EXPECT_LT(m.router_bias()[e], 0.0);
    if (counts[e] < mean) EXPECT_GT(m.router_bias()[e], 0.0);
  }
}
