// Finite-difference checks (double precision) of every CPU op's backward.
// Each test takes L = <w, op(x)> for a random w, so dL/dout = w.
#include <gtest/gtest.h>

#include "grad_check.hpp"
#include "ops/cpu/cpu_ops.hpp"

using namespace px;
using namespace px::cpu;
using px::test::dot;
using px::test::fd_rel_error;
using px::test::randn;

constexpr double kTol = 1e-6;

TEST(GradOps, RmsNorm) {
  std::mt19937_64 rng(1);
  const int N = 5, d = 7;
  auto x = randn(N * d, rng), g = randn(d, rng), w = randn(N * d, rng);
  std::vector<double> out(N * d), rstd(N), dx(N * d), dg(d, 0.0);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), g.data(), N, d);
    return dot(w, out.data());
  };
  loss();
  rmsnorm_backward(dx.data(), dg.data(), w.data(), x.data(), g.data(), rstd.data(), N, d);
  EXPECT_LT(fd_rel_error(x, dx, loss), kTol);
  EXPECT_LT(fd_rel_error(g, dg, loss), kTol);
}

TEST(GradOps, Rope) {
  std::mt19937_64 rng(2);
  const int B = 2, T = 5, H = 2, hd = 6, n = B * T * H * hd;
  auto x = randn(n, rng), w = randn(n, rng);
  std::vector<double> out(n), dx(n);
  auto loss = [&] {
    rope_forward(out.data(), x.data(), B, T, H, hd);
    return dot(w, out.data());
  };
  rope_backward(dx.data(), w.data(), B, T, H, hd);
  EXPECT_LT(fd_rel_error(x, dx, loss), kTol);
  // position 0 is the identity, a later position is not
  rope_forward(out.data(), x.data(), B, T, H, hd);
  EXPECT_DOUBLE_EQ(out[0], x[0]);
  EXPECT_NE(out[H * hd + 1], x[H * hd + 1]);
}

TEST(GradOps, Attention) {
  std::mt19937_64 rng(3);
  const int B = 2, T = 6, H = 2, hd = 4, n = B * T * H * hd;
  auto q = randn(n, rng), k = randn(n, rng), v = randn(n, rng), w = randn(n, rng);
  std::vector<double> out(n), probs(B * H * T * T), dq(n), dk(n), dv(n);
  auto loss = [&] {
    attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), B, T, H, hd);
    return dot(w, out.data());
  };
  loss();
  attention_backward(dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(),
                     probs.data(), B, T, H, hd);
  EXPECT_LT(fd_rel_error(q, dq, loss), kTol);
  EXPECT_LT(fd_rel_error(k, dk, loss), kTol);
  EXPECT_LT(fd_rel_error(v, dv, loss), kTol);
}

// The streamed attention (one head's probabilities at a time, recomputed in the backward)
// equals the stored one (so the finite-difference test above covers it): bit for bit when a
// head's T x T block keeps the SIMD alignment of the stored buffer (T = 8; every config's
// seq_len is a multiple of 4), else to rounding (T = 7: Eigen's products peel another way).
void expect_streamed_attention_equals_stored(int T, double tol) {
  std::mt19937_64 rng(13);
  const int B = 2, H = 3, hd = 4, n = B * T * H * hd;
  auto q = randn(n, rng), k = randn(n, rng), v = randn(n, rng), w = randn(n, rng);
  std::vector<double> out(n), out2(n), probs(B * H * T * T), dq(n), dk(n), dv(n), dq2(n), dk2(n), dv2(n);
  attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), B, T, H, hd);
  attention_backward(dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(),
                     probs.data(), B, T, H, hd);
  attention_forward_streamed(out2.data(), q.data(), k.data(), v.data(), B, T, H, hd);
  attention_backward_streamed(dq2.data(), dk2.data(), dv2.data(), w.data(), q.data(), k.data(),
                              v.data(), B, T, H, hd);
  for (auto [a, b] : {std::pair{&out2, &out}, {&dq2, &dq}, {&dk2, &dk}, {&dv2, &dv}})
    for (int i = 0; i < n; ++i) {
      if (tol == 0) ASSERT_EQ((*a)[i], (*b)[i]) << "T " << T << " element " << i;
      else ASSERT_NEAR((*a)[i], (*b)[i], tol * (1 + std::abs((*b)[i]))) << "T " << T << " element " << i;
    }
  EXPECT_NE(dq[n - 1], 0.0);
}

TEST(GradOps, StreamedAttentionEqualsStored) {
  expect_streamed_attention_equals_stored(8, 0.0);
  expect_streamed_attention_equals_stored(7, 1e-13);
}

TEST(GradOps, AttentionIsCausal) {
  std::mt19937_64 rng(4);
  const int B = 1, T = 5, H = 1, hd = 4, n = T * hd;
  auto q = randn(n, rng), k = randn(n, rng), v = randn(n, rng);
  std::vector<double> out(n), out2(n), probs(T * T);
  attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), B, T, H, hd);
  for (int i = 3 * hd; i < n; ++i) k[i] += 1.0, v[i] -= 2.0;  // change the future (t >= 3)
  attention_forward(out2.data(), probs.data(), q.data(), k.data(), v.data(), B, T, H, hd);
  for (int i = 0; i < 3 * hd; ++i) EXPECT_DOUBLE_EQ(out[i], out2[i]);
  EXPECT_NE(out[4 * hd], out2[4 * hd]);
}

TEST(GradOps, SwigluAndRelu2) {
  std::mt19937_64 rng(5);
  const int n = 40;
  auto a = randn(n, rng), b = randn(n, rng), w = randn(n, rng);
  std::vector<double> act(n), da(n), db(n);
  auto loss = [&] {
    swiglu_forward(act.data(), a.data(), b.data(), n);
    return dot(w, act.data());
  };
  swiglu_backward(da.data(), db.data(), w.data(), a.data(), b.data(), n);
  EXPECT_LT(fd_rel_error(a, da, loss), kTol);
  EXPECT_LT(fd_rel_error(b, db, loss), kTol);
  auto loss2 = [&] {
    relu2_forward(act.data(), a.data(), n);
    return dot(w, act.data());
  };
  relu2_backward(da.data(), w.data(), a.data(), n);
  EXPECT_LT(fd_rel_error(a, da, loss2), kTol);
}

TEST(GradOps, RouterGatesAndAux) {
  std::mt19937_64 rng(6);
  const int N = 6, E = 5, k = 2;
  auto logits = randn(N * E, rng, 2.0), wg = randn(N * k, rng), aux = randn(E, rng);
  std::vector<double> probs(N * E), gates(N * k), dlogits(N * E);
  std::vector<int32_t> idx(N * k);
  // L = <wg, gates> + sum_{n,e} aux_e * probs[n,e]
  auto loss = [&] {
    router_forward(probs.data(), idx.data(), gates.data(), logits.data(), (double*)nullptr, N, E,
                   k);
    double s = dot(wg, gates.data());
    for (int n = 0; n < N; ++n)
      for (int e = 0; e < E; ++e) s += aux[e] * probs[n * E + e];
    return s;
  };
  loss();
  for (int n = 0; n < N; ++n) {
    double gs = 0;
    for (int j = 0; j < k; ++j) gs += gates[n * k + j];
    EXPECT_NEAR(gs, 1.0, 1e-12);
    EXPECT_GE(probs[n * E + idx[n * k]], probs[n * E + idx[n * k + 1]]);
  }
  router_backward(dlogits.data(), wg.data(), probs.data(), idx.data(), gates.data(), aux.data(), N,
                  E, k);
  EXPECT_LT(fd_rel_error(logits, dlogits, loss), kTol);
}

TEST(GradOps, RouterBiasChangesSelectionOnly) {
  const int N = 1, E = 4, k = 1;
  std::vector<double> logits = {1.0, 0.5, 0.0, -1.0}, bias = {0, 0.5, 0, 0}, probs(E), gates(k);
  std::vector<int32_t> idx(k);
  router_forward(probs.data(), idx.data(), gates.data(), logits.data(), (double*)nullptr, N, E, k);
  EXPECT_EQ(idx[0], 0);
  router_forward(probs.data(), idx.data(), gates.data(), logits.data(), bias.data(), N, E, k);
  EXPECT_EQ(idx[0], 1);
  EXPECT_DOUBLE_EQ(gates[0], 1.0);
}

TEST(GradOps, PermuteCombine) {
  std::mt19937_64 rng(7);
  const int N = 7, E = 4, k = 2, d = 3;
  std::vector<int32_t> idx(N * k), bounds(E + 1), pos(N * k), row_token(N * k);
  for (int n = 0; n < N; ++n) idx[n * k] = n % E, idx[n * k + 1] = (n + 1 + n / E) % E;
  moe_permute_build(bounds.data(), pos.data(), row_token.data(), idx.data(), N, E, k);
  EXPECT_EQ(bounds[E], N * k);
  for (int a = 0; a < N * k; ++a) {
    EXPECT_EQ(row_token[pos[a]], a / k);
    EXPECT_GE(pos[a], bounds[idx[a]]);
    EXPECT_LT(pos[a], bounds[idx[a] + 1]);
  }
  auto yp = randn(N * k * d, rng), gates = randn(N * k, rng), w = randn(N * d, rng);
  std::vector<double> out(N * d), dyp(N * k * d), dg(N * k);
  auto loss = [&] {
    std::fill(out.begin(), out.end(), 0.0);
    combine_rows(out.data(), yp.data(), gates.data(), pos.data(), N, k, d);
    return dot(w, out.data());
  };
  combine_rows_backward(dyp.data(), dg.data(), w.data(), yp.data(), gates.data(), pos.data(), N, k,
                        d);
  EXPECT_LT(fd_rel_error(yp, dyp, loss), kTol);
  EXPECT_LT(fd_rel_error(gates, dg, loss), kTol);
  // gather then scatter-add is the adjoint pair
  auto x = randn(N * d, rng), wx = randn(N * k * d, rng);
  std::vector<double> xp(N * k * d), dx(N * d, 0.0);
  auto loss2 = [&] {
    gather_rows(xp.data(), x.data(), row_token.data(), N * k, d);
    return dot(wx, xp.data());
  };
  scatter_add_rows(dx.data(), wx.data(), row_token.data(), N * k, d);
  EXPECT_LT(fd_rel_error(x, dx, loss2), kTol);
}

namespace px::cpu {
void PrintTo(ExpertAct kind, std::ostream* os) { *os << (kind == EXPERT_ACT_SWIGLU ? "swiglu" : "relu2"); }
}  // namespace px::cpu

class GradExpertFfn : public ::testing::TestWithParam<ExpertAct> {};

TEST_P(GradExpertFfn, GroupedSegments) {
  const ExpertAct kind = GetParam();
  std::mt19937_64 rng(8 + GetParam());
  const int E = 3, d = 4, h = 5;
  std::vector<int32_t> bounds = {0, 3, 3, 7};  // expert 1 gets no tokens
  const int rows = bounds[E];
  auto X = randn(rows * d, rng), W1 = randn(E * d * h, rng, 0.5), W3 = randn(E * d * h, rng, 0.5),
       W2 = randn(E * h * d, rng, 0.5), w = randn(rows * d, rng);
  std::vector<double> Y(rows * d), A(rows * h), Bm(rows * h), act(rows * h), dX(rows * d),
      dW1(E * d * h, 0.0), dW3(E * d * h, 0.0), dW2(E * h * d, 0.0), s1(rows * h), s2(rows * h),
      s3(rows * h);
  auto loss = [&] {
    expert_ffn_forward(Y.data(), A.data(), Bm.data(), act.data(), X.data(), W1.data(), W3.data(),
                       W2.data(), bounds.data(), E, d, h, kind);
    return dot(w, Y.data());
  };
  loss();
  expert_ffn_backward(dX.data(), dW1.data(), dW3.data(), dW2.data(), w.data(), X.data(), A.data(),
                      Bm.data(), act.data(), W1.data(), W3.data(), W2.data(), bounds.data(), E, d,
                      h, kind, s1.data(), s2.data(), s3.data());
  EXPECT_LT(fd_rel_error(X, dX, loss), kTol);
  EXPECT_LT(fd_rel_error(W1, dW1, loss), kTol);
  EXPECT_LT(fd_rel_error(W2, dW2, loss), kTol);
  if (kind == EXPERT_ACT_SWIGLU) EXPECT_LT(fd_rel_error(W3, dW3, loss), kTol);
  for (int i = d * h; i < 2 * d * h; ++i) EXPECT_EQ(dW1[i], 0.0);  // idle expert: no gradient
}
INSTANTIATE_TEST_SUITE_P(GradActs, GradExpertFfn,
                         ::testing::Values(EXPERT_ACT_SWIGLU, EXPERT_ACT_RELU2),
                         [](const auto& info) { return ::testing::PrintToString(info.param); });

TEST(GradOps, CrossEntropy) {
  std::mt19937_64 rng(9);
  const int N = 4, V = 9;
  auto logits = randn(N * V, rng);
  std::vector<int32_t> t = {0, 3, 8, 3};
  std::vector<double> dl(N * V);
  auto loss = [&] { return cross_entropy<double>(nullptr, logits.data(), t.data(), N, V, 0.0); };
  cross_entropy<double>(dl.data(), logits.data(), t.data(), N, V, 1.0 / N);
  EXPECT_LT(fd_rel_error(logits, dl, loss), kTol);
  std::vector<double> zeros(N * V, 0.0);
  EXPECT_NEAR(cross_entropy<double>(nullptr, zeros.data(), t.data(), N, V, 0.0), std::log(9.0),
              1e-12);
}

TEST(GradOps, MatmulTransposes) {
  std::mt19937_64 rng(10);
  const int M = 3, K = 4, N = 5;
  auto A = randn(M * K, rng), B = randn(K * N, rng);
  std::vector<double> At(K * M), Bt(N * K), C0(M * N), C(M * N);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < K; ++j) At[j * M + i] = A[i * K + j];
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < N; ++j) Bt[j * K + i] = B[i * N + j];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int kk = 0; kk < K; ++kk) s += A[i * K + kk] * B[kk * N + j];
      C0[i * N + j] = s;
    }
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      matmul(C.data(), ta ? At.data() : A.data(), tb ? Bt.data() : B.data(), M, K, N, ta, tb,
             false);
      for (int i = 0; i < M * N; ++i) EXPECT_NEAR(C[i], C0[i], 1e-12);
    }
}

TEST(GradOps, AdamwStep) {
  std::vector<double> p = {1.0, -2.0}, g = {0.5, -0.25}, m(2, 0.0), v(2, 0.0);
  adamw_update(p.data(), g.data(), m.data(), v.data(), 2, 0.1, 0.9, 0.95, 1e-8, 0.1, 1);
  // first step: mhat/sqrt(vhat) = sign(g); p -= lr (sign(g) + wd p)
  EXPECT_NEAR(p[0], 1.0 - 0.1 * (1.0 + 0.1 * 1.0), 1e-7);
  EXPECT_NEAR(p[1], -2.0 - 0.1 * (-1.0 + 0.1 * -2.0), 1e-7);
}

// Low-rank adapter: loss(A, B) = sum G * W + 0.5 sum W^2 with W = base + A B (dW = G + W).
TEST(GradOps, LowrankAdapter) {
  std::mt19937_64 rng(91);
  const int in = 7, r = 3, out = 5;
  auto base = px::test::randn((size_t)in * out, rng), G = px::test::randn((size_t)in * out, rng);
  auto A = px::test::randn((size_t)in * r, rng), B = px::test::randn((size_t)r * out, rng);
  std::vector<double> W((size_t)in * out);
  auto loss = [&] {
    px::cpu::adapter_merge(W.data(), base.data(), A.data(), B.data(), in, r, out);
    double l = 0;
    for (size_t i = 0; i < W.size(); ++i) l += G[i] * W[i] + 0.5 * W[i] * W[i];
    return l;
  };
  loss();
  std::vector<double> dW(W.size()), dA(A.size(), 0.0), dB(B.size(), 0.0);
  for (size_t i = 0; i < W.size(); ++i) dW[i] = G[i] + W[i];
  px::cpu::adapter_backward(dA.data(), dB.data(), dW.data(), A.data(), B.data(), in, r, out);
  EXPECT_LT(px::test::fd_rel_error(A.data(), A.size(), dA, loss), 1e-7);
  EXPECT_LT(px::test::fd_rel_error(B.data(), B.size(), dB, loss), 1e-7);
}
