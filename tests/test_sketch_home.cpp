// The sketch home (src/sketch/sketch_home.hpp) end to end on the CPU: island rows -> sampler ->
// wire -> home -> expert backward with the master weights. A sketch of all rows (bf16) gives
// the exact expert weight gradient up to bf16 rounding; importance-sampled int8 sketches give
// it on average (unbiased); rejected sketches are counted and change nothing.
#include <gtest/gtest.h>

#include "random_data.hpp"  // defines: randn_vec

#include <cmath>
#include <random>
#include <vector>

#include "ops/cpu/cpu_ops.hpp"       // defines: expert_ffn_forward/backward
#include "sketch/sketch_home.hpp"    // defines: SketchHome
#include "sketch/sketch_sample.hpp"  // defines: sketch_sample_rows, sketch_gather

using namespace px;

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  return px::test::randn_vec<float>(n, seed, scale);
}

struct Expert {
  int d, h;
  px::cpu::ExpertAct act;
  std::vector<float> W1, W3, W2, dW1, dW3, dW2;
  Expert(int d_, int h_, px::cpu::ExpertAct a, uint32_t seed)
      : d(d_), h(h_), act(a), W1(randn((size_t)d * h, seed, 0.3f)),
        W3(randn((size_t)d * h, seed + 1, 0.3f)), W2(randn((size_t)h * d, seed + 2, 0.3f)),
        dW1((size_t)d * h), dW3((size_t)d * h), dW2((size_t)h * d) {}
  HomeExpertSlot slot(int m, int e) {
    return {m, e, W1.data(), W3.data(), W2.data(), dW1.data(), dW3.data(), dW2.data()};
  }
  // The exact weight gradient of rows X, dY (fresh buffers).
  std::vector<float> exact(const std::vector<float>& X, const std::vector<float>& dY) const {
    const int rows = (int)(X.size() / d);
    std::vector<float> Y((size_t)rows * d), A((size_t)rows * h), B(A.size()), act_(A.size()),
        dX(Y.size()), s1(A.size()), s2(A.size()), s3(A.size());
    std::vector<float> g1(W1.size()), g3(W3.size()), g2(W2.size());
    const int32_t bounds[2] = {0, rows};
    px::cpu::expert_ffn_forward<float>(Y.data(), A.data(), B.data(), act_.data(), X.data(),
                                       W1.data(), W3.data(), W2.data(), bounds, 1, d, h, act);
    px::cpu::expert_ffn_backward<float>(dX.data(), g1.data(), g3.data(), g2.data(), dY.data(),
                                        X.data(), A.data(), B.data(), act_.data(), W1.data(),
                                        W3.data(), W2.data(), bounds, 1, d, h, act, s1.data(),
                                        s2.data(), s3.data());
    g1.insert(g1.end(), g3.begin(), g3.end());
    g1.insert(g1.end(), g2.begin(), g2.end());
    return g1;
  }
  std::vector<double> grad() const {
    std::vector<double> g(dW1.begin(), dW1.end());
    g.insert(g.end(), dW3.begin(), dW3.end());
    g.insert(g.end(), dW2.begin(), dW2.end());
    return g;
  }
};

template <class A, class B>
double rel_err(const A& est, const B& exact) {
  double num = 0, den = 0;
  for (size_t i = 0; i < exact.size(); ++i)
    num += ((double)est[i] - exact[i]) * ((double)est[i] - exact[i]), den += (double)exact[i] * exact[i];
  return std::sqrt(num / den);
}

constexpr SketchKey kKey{0x1111, 0x2222};

// An island rank's sketch of expert (m, e) for step `step`.
std::vector<uint8_t> island_sketch(const std::vector<float>& X, const std::vector<float>& dY,
                                   int d, int n, int m, int e, int step, SketchElem t,
                                   SketchKey key = kKey) {
  SketchSample s;
  const int cnt = (int)(X.size() / d);
  sketch_sample_rows(s, X.data(), dY.data(), cnt, d, n, 99, step, m * 64 + e);
  std::vector<float> Xs, dYs;
  sketch_gather(s, X.data(), dY.data(), d, Xs, dYs);
  std::vector<uint8_t> bytes;
  sketch_encode(bytes, SketchMeta{sketch_handle(key, m, e), step, 0, t}, Xs.data(), dYs.data(),
                (int)s.rows.size(), d);
  return bytes;
}

}  // namespace

TEST(SketchHome, FullBf16SketchesGiveTheExactGradient) {
  for (auto act : {px::cpu::EXPERT_ACT_SWIGLU, px::cpu::EXPERT_ACT_RELU2}) {
    const int d = 16, h = 24, cnt = 20;
    Expert a(d, h, act, 1), b(d, h, act, 2);
    SketchHome home(d, h, act, kKey, 64, 4, {a.slot(0, 1), b.slot(1, 3)});
    auto Xa = randn((size_t)cnt * d, 10), Ga = randn((size_t)cnt * d, 11, 0.1f);
    auto Xb = randn((size_t)(cnt + 7) * d, 12), Gb = randn((size_t)(cnt + 7) * d, 13, 0.1f);
    // two sources send expert a's rows in halves; expert b gets one sketch
    std::vector<float> Xa1(Xa.begin(), Xa.begin() + 8 * d), Ga1(Ga.begin(), Ga.begin() + 8 * d);
    std::vector<float> Xa2(Xa.begin() + 8 * d, Xa.end()), Ga2(Ga.begin() + 8 * d, Ga.end());
    for (auto bytes : {island_sketch(Xa1, Ga1, d, 64, 0, 1, 5, SKETCH_BF16),
                       island_sketch(Xa2, Ga2, d, 64, 0, 1, 5, SKETCH_BF16),
                       island_sketch(Xb, Gb, d, 64, 1, 3, 5, SKETCH_BF16)})
      ASSERT_EQ(home.receive(bytes.data(), bytes.size(), 5), SketchStatus::OK);
    EXPECT_EQ(home.queued_rows(), (size_t)(2 * cnt + 7));
    EXPECT_EQ(home.accumulate(), (size_t)(2 * cnt + 7));
    EXPECT_EQ(home.queued_rows(), 0u);
    double ea = rel_err(a.grad(), a.exact(Xa, Ga)), eb = rel_err(b.grad(), b.exact(Xb, Gb));
    EXPECT_LT(ea, 1e-2) << "act " << act;
    EXPECT_LT(eb, 1e-2) << "act " << act;
    EXPECT_GT(rel_err(a.grad(), b.exact(Xb, Gb)), 0.5) << "experts must not be mixed up";
  }
}

TEST(SketchHome, SampledInt8SketchesAreUnbiased) {
  // 16 of 150 rows per sketch. The error of the running mean must shrink like 1/sqrt(steps)
  // (variance, no bias): measured 0.12 after 400 steps, about half of that after 1600.
  const int d = 12, h = 16, cnt = 150, n = 16;
  Expert a(d, h, px::cpu::EXPERT_ACT_SWIGLU, 3);
  SketchHome home(d, h, a.act, kKey, n, 0, {a.slot(2, 5)});
  auto X = randn((size_t)cnt * d, 20), G = randn((size_t)cnt * d, 21, 0.1f);
  for (int r = 0; r < cnt; ++r)  // uneven importance
    for (int i = 0; i < d; ++i) G[(size_t)r * d + i] *= 0.2f + (r % 9);
  const auto exact = a.exact(X, G);
  std::vector<double> err;
  for (int t = 0; t < 3200; ++t) {
    auto bytes = island_sketch(X, G, d, n, 2, 5, t, SKETCH_INT8);
    ASSERT_EQ(home.receive(bytes.data(), bytes.size(), t), SketchStatus::OK);
    home.accumulate();
    if (t + 1 == 200 || t + 1 == 3200) {
      auto est = a.grad();
      for (auto& v : est) v /= t + 1;
      err.push_back(rel_err(est, exact));
    }
  }
  EXPECT_LT(err[1], 0.06);
  EXPECT_LT(err[1], 0.5 * err[0]) << "after 200 steps " << err[0] << ", after 3200 " << err[1];
}

TEST(SketchHome, RejectedSketchesAreCountedAndChangeNothing) {
  const int d = 16, h = 8;
  Expert a(d, h, px::cpu::EXPERT_ACT_RELU2, 4);
  SketchHome home(d, h, a.act, kKey, 32, 2, {a.slot(0, 0)});
  auto X = randn(10 * d, 30), G = randn(10 * d, 31);
  auto good = island_sketch(X, G, d, 32, 0, 0, 10, SKETCH_FP8);
  auto corrupt = good;
  corrupt[100] ^= 4;
  auto foreign = island_sketch(X, G, d, 32, 0, 0, 10, SKETCH_FP8, SketchKey{7, 7});
  auto other = island_sketch(X, G, d, 32, 0, 1, 10, SKETCH_FP8);  // not homed here
  EXPECT_EQ(home.receive(corrupt.data(), corrupt.size(), 10), SketchStatus::BAD_CHECKSUM);
  EXPECT_EQ(home.receive(foreign.data(), foreign.size(), 10), SketchStatus::UNKNOWN_HANDLE);
  EXPECT_EQ(home.receive(other.data(), other.size(), 10), SketchStatus::UNKNOWN_HANDLE);
  EXPECT_EQ(home.receive(good.data(), good.size(), 13), SketchStatus::STALE);
  EXPECT_EQ(home.receive(good.data(), 47, 10), SketchStatus::TRUNCATED);
  EXPECT_EQ(home.queued_rows(), 0u);
  EXPECT_EQ(home.accumulate(), 0u);
  for (double g : a.grad()) ASSERT_EQ(g, 0.0);
  EXPECT_EQ(home.tally().summary(),
            "accepted 0, rejected 5 (truncated 1, bad_checksum 1, unknown_handle 2, stale 1)");
  EXPECT_EQ(home.receive(good.data(), good.size(), 12), SketchStatus::OK);
  EXPECT_EQ(home.accumulate(), 10u);
  double norm = 0;
  for (double g : a.grad()) norm += g * g;
  EXPECT_GT(norm, 0.0);
}

// A sketch that verifies (codes, scales and checksum in order) but whose values would overflow
// the home's gradient (|X| = 6e37 in bf16; an int8 row scale of 4e24) is refused as non-finite,
// counted, and changes nothing.
TEST(SketchHome, HugeValuesInAValidSketchAreRefused) {
  const int d = 8, h = 8;
  Expert a(d, h, px::cpu::EXPERT_ACT_RELU2, 5);
  SketchHome home(d, h, a.act, kKey, 32, 2, {a.slot(0, 0)});
  auto X = randn(3 * d, 40), G = randn(3 * d, 41);
  for (float& x : X) x *= 6e37f;
  auto huge_bf16 = island_sketch(X, G, d, 32, 0, 0, 10, SKETCH_BF16);
  auto X2 = randn(3 * d, 42);
  for (float& x : X2) x *= 4e24f;
  auto huge_int8 = island_sketch(X2, G, d, 32, 0, 0, 10, SKETCH_INT8);
  EXPECT_EQ(home.receive(huge_bf16.data(), huge_bf16.size(), 10), SketchStatus::NON_FINITE);
  EXPECT_EQ(home.receive(huge_int8.data(), huge_int8.size(), 10), SketchStatus::NON_FINITE);
  EXPECT_EQ(home.accumulate(), 0u);
  for (double g : a.grad()) ASSERT_EQ(g, 0.0);
  EXPECT_EQ(home.tally().summary(), "accepted 0, rejected 2 (non_finite 2)");
}
