// Low-rank expert views (DESIGN §6, base lowrank; src/model/lowrank_view.hpp): the randomized fit
// against exact low-rank matrices and against the optimal (Eckart-Young) error of matrices with
// a known or Eigen-computed spectrum, determinism (bits, seeds, thread counts), deltas and their
// re-compressing addition, dense conversion, the wire form of a matrix and of an expert (exact
// sizes, bit-exact round trips, malformed buffers) and expert views from masters and the arena.
//
// Test matrices come from util/hash_rng.hpp (Box-Muller over uniform01) and Gram-Schmidt written
// here, not from std:: distributions, so the inputs are the same on every machine.
#include <gtest/gtest.h>
#include <omp.h>

#include <Eigen/SVD>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "model/lowrank_view.hpp"  // defines: LowrankMatrix, LowrankExpertView, lowrank_*
#include "model/moe_model.hpp"     // defines: MoeModel (the arena layout of routed experts)
#include "util/hash_rng.hpp"       // defines: uniform01, splitmix64

namespace {

using px::LowrankExpertView;
using px::LowrankMatrix;
using px::cpu::EXPERT_ACT_RELU2;
using px::cpu::EXPERT_ACT_SWIGLU;
using px::cpu::ExpertAct;

// ---- test data ----------------------------------------------------------------------------------

double gauss(uint64_t seed, uint64_t e) {
  const double u1 = px::uniform01(seed, 2 * e), u2 = px::uniform01(seed, 2 * e + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}
std::vector<double> randn(size_t n, uint64_t seed, double sd = 1.0) {
  std::vector<double> v(n);
  for (size_t e = 0; e < n; ++e) v[e] = sd * gauss(seed, e);
  return v;
}
std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// k orthonormal columns of length n (row-major [n, k]): modified Gram-Schmidt, twice.
std::vector<double> orthonormal(int n, int k, uint64_t seed) {
  auto A = randn((size_t)n * k, seed);
  for (int pass = 0; pass < 2; ++pass)
    for (int c = 0; c < k; ++c) {
      for (int p = 0; p < c; ++p) {
        double dot = 0;
        for (int i = 0; i < n; ++i) dot += A[(size_t)i * k + p] * A[(size_t)i * k + c];
        for (int i = 0; i < n; ++i) A[(size_t)i * k + c] -= dot * A[(size_t)i * k + p];
      }
      double nn = 0;
      for (int i = 0; i < n; ++i) nn += A[(size_t)i * k + c] * A[(size_t)i * k + c];
      for (int i = 0; i < n; ++i) A[(size_t)i * k + c] /= std::sqrt(nn);
    }
  return A;
}

// W [m, n] = sum_i s_i u_i v_i^T with orthonormal u_i, v_i (i < s.size() <= min(m, n)).
std::vector<double> with_spectrum(int m, int n, const std::vector<double>& s, uint64_t seed) {
  const int k = (int)s.size();
  auto U = orthonormal(m, k, seed), V = orthonormal(n, k, seed + 1);
  std::vector<double> W((size_t)m * n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int c = 0; c < k; ++c) {
      const double u = U[(size_t)i * k + c] * s[c];
      for (int j = 0; j < n; ++j) W[(size_t)i * n + j] += u * V[(size_t)j * k + c];
    }
  return W;
}
std::vector<double> geometric(int k, double q) {
  std::vector<double> s(k);
  for (int i = 0; i < k; ++i) s[i] = std::pow(q, i);
  return s;
}

// ---- measures -----------------------------------------------------------------------------------

std::vector<double> dense(const LowrankMatrix& f) {
  std::vector<double> W((size_t)f.in * f.out);
  px::lowrank_to_dense(W.data(), f);
  return W;
}
template <class T>
double frob(const std::vector<T>& a) {
  double s = 0;
  for (auto x : a) s += (double)x * (double)x;
  return std::sqrt(s);
}
// ||W - U V||_F
template <class T>
double fit_err(const std::vector<T>& W, const LowrankMatrix& f) {
  auto D = dense(f);
  double s = 0;
  for (size_t e = 0; e < W.size(); ++e) s += ((double)W[e] - D[e]) * ((double)W[e] - D[e]);
  return std::sqrt(s);
}
// The optimal rank-r error sqrt(sum_{i >= r} sigma_i^2) of W (Eckart-Young), from Eigen's full
// SVD in double of exactly the values given.
template <class T>
double optimal_err(const std::vector<T>& W, int m, int n, int r) {
  Eigen::MatrixXd M(m, n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) M(i, j) = (double)W[(size_t)i * n + j];
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(M);
  const auto& s = svd.singularValues();
  double t = 0;
  for (int i = r; i < s.size(); ++i) t += s(i) * s(i);
  return std::sqrt(t);
}
bool same_bits(const LowrankMatrix& a, const LowrankMatrix& b) {
  return a.in == b.in && a.out == b.out && a.rank == b.rank && a.U.size() == b.U.size() &&
         a.V.size() == b.V.size() && std::memcmp(a.U.data(), b.U.data(), 4 * a.U.size()) == 0 &&
         std::memcmp(a.V.data(), b.V.data(), 4 * a.V.size()) == 0;
}

// ---- fitting ------------------------------------------------------------------------------------

// A matrix of exact rank r (fp32 values of A B, A [m, r], B [r, n] Gaussian) is recovered to fp32
// precision at rank r, with and without power iterations, for wide and tall shapes; a rank above
// min(in, out) is clamped, and then any matrix is recovered.
TEST(LowrankFit, ExactRankIsRecovered) {
  struct Case { int m, n, r; };
  for (auto [m, n, r] : {Case{96, 160, 12}, Case{200, 40, 7}, Case{33, 33, 1}, Case{64, 64, 56}}) {
    auto A = randn((size_t)m * r, 10 + m), B = randn((size_t)r * n, 20 + n);
    std::vector<float> W((size_t)m * n);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int c = 0; c < r; ++c) s += A[(size_t)i * r + c] * B[(size_t)c * n + j];
        W[(size_t)i * n + j] = (float)s;
      }
    for (int q : {0, 2}) {
      SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " r=" + std::to_string(r) +
                   " power_iters=" + std::to_string(q));
      auto f = px::lowrank_fit(W.data(), m, n, r, 5, q);
      ASSERT_EQ(f.rank, r);
      ASSERT_EQ(f.U.size(), (size_t)m * r);
      ASSERT_EQ(f.V.size(), (size_t)r * n);
      const double rel = fit_err(W, f) / frob(W);
      EXPECT_LT(rel, 1e-5);
      // one rank less cannot do it: the test can tell an exact fit from a near one
      if (r > 1) EXPECT_GT(fit_err(W, px::lowrank_fit(W.data(), m, n, r - 1, 5, q)) / frob(W), 1e-3);
    }
  }
  // rank clamped to min(in, out): a full-rank Gaussian 30 x 20 at "rank 100" is rank 20, exact
  auto G = to_f(randn(30 * 20, 77));
  auto f = px::lowrank_fit(G.data(), 30, 20, 100, 1);
  EXPECT_EQ(f.rank, 20);
  EXPECT_LT(fit_err(G, f) / frob(G), 1e-6);
}

// Near-optimal on decaying spectra: ||W - U V||_F within 1.05x of the optimal rank-r error.
// (1) known spectrum s_i = 0.85^i: missing even the weakest kept component (s_15) would make the
// ratio 1.18, so 1.05 means the right subspace; (2) a Gaussian matrix times a decaying column
// scale (spectrum unknown), against Eigen's full JacobiSVD in double; (3) a slow 1/(i+1) decay,
// where power iterations are what gets within 1.05.
TEST(LowrankFit, NearOptimalOnDecayingSpectra) {
  const int m = 128, n = 256, r = 16;
  auto W1 = to_f(with_spectrum(m, n, geometric(m, 0.85), 31));
  std::vector<float> W2((size_t)m * n);
  {
    auto G = randn((size_t)m * n, 32);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) W2[(size_t)i * n + j] = (float)(G[(size_t)i * n + j] * std::pow(0.9, j / 2.0));
  }
  std::vector<double> slow(m);
  for (int i = 0; i < m; ++i) slow[i] = 1.0 / (i + 1);
  auto W3 = to_f(with_spectrum(m, n, slow, 33));
  struct Case { const char* name; const std::vector<float>* W; };
  for (auto [name, W] : {Case{"0.85^i", &W1}, Case{"gaussian * 0.9^(j/2)", &W2}, Case{"1/(i+1)", &W3}}) {
    SCOPED_TRACE(name);
    const double opt = optimal_err(*W, m, n, r);
    double ratio[3];
    for (int q = 0; q < 3; ++q) ratio[q] = fit_err(*W, px::lowrank_fit(W->data(), m, n, r, 9, q)) / opt;
    std::printf("[ fit %-20s ] %dx%d rank %d: ||W - UV|| / optimal = %.5f (q=0), %.5f (q=1), %.5f (q=2); "
                "optimal relative error %.4f\n",
                name, m, n, r, ratio[0], ratio[1], ratio[2], opt / frob(*W));
    EXPECT_LT(ratio[2], 1.05);
    EXPECT_GE(ratio[2], 1.0 - 1e-6);  // nothing beats Eckart-Young (up to fp32 rounding)
    EXPECT_LE(ratio[2], ratio[0] + 1e-9);
  }
  // the known spectrum: Eigen finds it (the test's own yardstick is right)
  double tail = 0;
  for (int i = r; i < m; ++i) tail += std::pow(0.85, 2 * i);
  EXPECT_NEAR(optimal_err(W1, m, n, r), std::sqrt(tail), 1e-5);
}

// Same inputs and seed: bit-identical factors, whatever the thread count (the products are
// large enough to run on OpenMP threads) and whether the master is given as fp32 or as the same
// values in double. Another seed: different bits, same quality.
// The spectrum has a cluster of 4 equal singular values inside the kept rank: their singular
// vectors are fixed only by rounding, so any change of summation order in the double
// intermediates (which the final rounding to fp32 would otherwise hide) shows in U and V.
TEST(LowrankFit, Deterministic) {
  const int m = 256, n = 512, r = 16;
  auto spectrum = geometric(m, 0.9);
  for (int i = 3; i < 7; ++i) spectrum[i] = spectrum[2];
  auto Wd = with_spectrum(m, n, spectrum, 41);
  auto W = to_f(Wd);
  for (auto& x : Wd) x = (double)(float)x;
  auto a = px::lowrank_fit(W.data(), m, n, r, 123);
  auto b = px::lowrank_fit(W.data(), m, n, r, 123);
  EXPECT_TRUE(same_bits(a, b));
  EXPECT_TRUE(same_bits(a, px::lowrank_fit(Wd.data(), m, n, r, 123)));
  const int saved = omp_get_max_threads();
  for (int t : {1, 2, 3}) {
    omp_set_num_threads(t);
    EXPECT_TRUE(same_bits(a, px::lowrank_fit(W.data(), m, n, r, 123))) << t << " threads";
    auto d1 = px::lowrank_delta(W.data(), a, 8, 5);
    omp_set_num_threads(1);
    auto d2 = px::lowrank_delta(W.data(), a, 8, 5);
    EXPECT_TRUE(same_bits(d1, d2)) << t << " threads";
    auto s1 = a, s2 = a;
    omp_set_num_threads(t);
    px::lowrank_add(s1, d1);
    omp_set_num_threads(1);
    px::lowrank_add(s2, d2);
    EXPECT_TRUE(same_bits(s1, s2)) << t << " threads";
  }
  omp_set_num_threads(saved);
  auto c = px::lowrank_fit(W.data(), m, n, r, 124);
  EXPECT_FALSE(same_bits(a, c));
  const double ea = fit_err(W, a), ec = fit_err(W, c);
  std::printf("[ seeds ] error seed 123: %.7g, seed 124: %.7g, optimal %.7g\n", ea, ec, optimal_err(W, m, n, r));
  EXPECT_NEAR(ec / ea, 1.0, 0.01);
  // different bits, but the same subspace: the products agree closely
  auto Da = dense(a), Dc = dense(c);
  double diff = 0;
  for (size_t e = 0; e < Da.size(); ++e) diff += (Da[e] - Dc[e]) * (Da[e] - Dc[e]);
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(std::sqrt(diff) / frob(Da), 1e-2);
}

// A zero matrix (or a zero residual) fits to U = 0 with finite V: it can be sent and added.
TEST(LowrankFit, ZeroMatrix) {
  std::vector<float> Z(20 * 12, 0.f);
  auto f = px::lowrank_fit(Z.data(), 20, 12, 4, 1);
  for (float u : f.U) EXPECT_EQ(u, 0.f);
  for (float v : f.V) EXPECT_TRUE(std::isfinite(v));
  auto wire = px::lowrank_to_wire(f);
  EXPECT_TRUE(same_bits(px::lowrank_from_wire(wire.data(), wire.size()), f));
  auto W = to_f(randn(20 * 12, 51));
  auto view = px::lowrank_fit(W.data(), 20, 12, 12, 1);  // full rank: residual ~ fp32 rounding
  auto d = px::lowrank_delta(W.data(), view, 8, 2);
  auto upd = view;
  px::lowrank_add(upd, d);
  EXPECT_LT(fit_err(W, upd) / frob(W), 1e-6);
  px::lowrank_add(f, px::lowrank_delta(Z.data(), f, 2, 3));
  EXPECT_EQ(fit_err(Z, f), 0.0);
}

TEST(LowrankFit, BadArgumentsThrow) {
  auto W = to_f(randn(12 * 10, 50));
  EXPECT_THROW(px::lowrank_fit(W.data(), 12, 10, 0, 1), std::invalid_argument);
  EXPECT_THROW(px::lowrank_fit(W.data(), 0, 10, 2, 1), std::invalid_argument);
  EXPECT_THROW(px::lowrank_fit(W.data(), 12, 10, 2, 1, -1), std::invalid_argument);
  W[37] = std::numeric_limits<float>::quiet_NaN();
  try {
    px::lowrank_fit(W.data(), 12, 10, 2, 1);
    ADD_FAILURE() << "no exception for a NaN master";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("W[3, 7]"), std::string::npos) << e.what();
  }
}

// ---- deltas -------------------------------------------------------------------------------------

// The home's refresh: W moves by a small rank-2 change; the view's error against the new W' is
// then well above the optimal rank-r error of W'; one rank-8 delta plus the re-compressing add
// brings it within 1.05x of that optimum, at the same rank and size. A zero change keeps the
// view near-optimal.
TEST(LowrankDelta, ASmallLowRankChangeIsTracked) {
  const int m = 96, n = 192, r = 16;
  auto Wd = with_spectrum(m, n, geometric(m, 0.85), 61);
  auto W = to_f(Wd);
  auto view = px::lowrank_fit(W.data(), m, n, r, 7);
  // W' = W + 0.3 x1 y1^T + 0.2 x2 y2^T (unit x, y): between s_7 and s_10 of W
  auto X = orthonormal(m, 2, 62), Y = orthonormal(n, 2, 63);
  std::vector<float> W2((size_t)m * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      W2[(size_t)i * n + j] = (float)(Wd[(size_t)i * n + j] + 0.3 * X[(size_t)i * 2] * Y[(size_t)j * 2] +
                                      0.2 * X[(size_t)i * 2 + 1] * Y[(size_t)j * 2 + 1]);
  const double opt2 = optimal_err(W2, m, n, r);
  const double before = fit_err(W2, view);

  auto delta = px::lowrank_delta(W2.data(), view, 8, 8);
  EXPECT_EQ(delta.rank, 8);
  EXPECT_EQ(delta.U.size(), (size_t)m * 8);
  EXPECT_EQ(delta.V.size(), (size_t)8 * n);
  // the delta is the fit of the residual: dense(view) + dense(delta) is close to W2 (closer than
  // the view alone), and lowrank_add_to_dense adds exactly dense(delta)
  std::vector<double> D = dense(view), Dd = dense(delta);
  std::vector<double> D2 = D;
  px::lowrank_add_to_dense(D2.data(), delta);
  for (size_t e = 0; e < D.size(); ++e) ASSERT_EQ(D2[e], D[e] + Dd[e]) << e;
  const double sum_err = [&] {
    double s = 0;
    for (size_t e = 0; e < D2.size(); ++e) s += (W2[e] - D2[e]) * (W2[e] - D2[e]);
    return std::sqrt(s);
  }();

  auto upd = view;
  px::lowrank_add(upd, delta);
  EXPECT_EQ(upd.rank, r);
  EXPECT_EQ(upd.U.size(), view.U.size());
  EXPECT_EQ(upd.V.size(), view.V.size());
  const double after = fit_err(W2, upd);
  // a second refresh from the new view
  auto upd2 = upd;
  px::lowrank_add(upd2, px::lowrank_delta(W2.data(), upd, 8, 9));
  const double after2 = fit_err(W2, upd2);
  std::printf("[ delta ] vs W': optimal %.6f, view before %.6f (%.3fx), view + delta (rank 24) %.6f, after "
              "add %.6f (%.4fx), after a second refresh %.6f (%.4fx)\n",
              opt2, before, before / opt2, sum_err, after, after / opt2, after2, after2 / opt2);
  EXPECT_GT(before / opt2, 1.5);  // the change matters
  EXPECT_LT(after / opt2, 1.05);
  EXPECT_LT(after2 / opt2, 1.05);
  EXPECT_LT(after, before);

  // no change: the delta fits the tail; the view stays (near-)optimal for W
  auto same = view;
  px::lowrank_add(same, px::lowrank_delta(W.data(), view, 8, 10));
  const double opt = optimal_err(W, m, n, r);
  EXPECT_LT(fit_err(W, same) / opt, 1.05);
}

// The re-compressing add is the truncated SVD of U V + Ud Vd: an add whose sum has rank <= r is
// exact (here: a view of rank 6 of an exact rank-4 matrix, plus a rank-2 change); a delta of
// another shape is refused; and a delta with k = r + rd above min(in, out) (QR of a wide stack)
// still works.
TEST(LowrankDelta, AddIsTheTruncatedSvdOfTheSum) {
  const int m = 40, n = 24;
  auto Wd = with_spectrum(m, n, {3.0, 2.0, 1.5, 1.0}, 71);
  auto W = to_f(Wd);
  auto view = px::lowrank_fit(W.data(), m, n, 6, 1);
  auto X = orthonormal(m, 2, 72), Y = orthonormal(n, 2, 73);
  std::vector<float> W2(W.size());
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      W2[(size_t)i * n + j] = (float)(Wd[(size_t)i * n + j] + 0.7 * X[(size_t)i * 2] * Y[(size_t)j * 2] -
                                      0.4 * X[(size_t)i * 2 + 1] * Y[(size_t)j * 2 + 1]);
  auto upd = view;
  px::lowrank_add(upd, px::lowrank_delta(W2.data(), view, 2, 3));
  EXPECT_LT(fit_err(W2, upd) / frob(W2), 1e-5);
  // k = 20 + 8 = 28 > min(40, 24) = 24
  auto G = to_f(randn((size_t)m * n, 74));
  auto big = px::lowrank_fit(G.data(), m, n, 20, 2);
  auto bigd = px::lowrank_delta(G.data(), big, 8, 3);
  auto sum = dense(big);
  px::lowrank_add_to_dense(sum.data(), bigd);
  px::lowrank_add(big, bigd);
  EXPECT_EQ(big.rank, 20);
  EXPECT_LT(fit_err(G, big) / optimal_err(G, m, n, 20), 1.0 + 1e-4);  // = the rank-20 optimum of G
  EXPECT_LE(fit_err(sum, big), optimal_err(sum, m, n, 20) * (1 + 1e-4));
  // shapes must agree
  auto other = px::lowrank_fit(G.data(), n, m, 4, 1);
  EXPECT_THROW(px::lowrank_add(big, other), std::invalid_argument);
}

// lowrank_to_dense / lowrank_add_to_dense against a naive double sum; float output is the double
// sum rounded once.
TEST(LowrankDelta, ToDenseAndAddToDense) {
  const int m = 17, n = 29;
  LowrankMatrix f;
  f.in = m, f.out = n, f.rank = 3;
  f.U = to_f(randn((size_t)m * 3, 80));
  f.V = to_f(randn((size_t)3 * n, 81));
  std::vector<double> Wd((size_t)m * n);
  std::vector<float> Wf((size_t)m * n);
  px::lowrank_to_dense(Wd.data(), f);
  px::lowrank_to_dense(Wf.data(), f);
  auto B = to_f(randn((size_t)m * n, 82));
  std::vector<float> Bf = B;
  px::lowrank_add_to_dense(Bf.data(), f);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int c = 0; c < 3; ++c) s += (double)f.U[(size_t)i * 3 + c] * (double)f.V[(size_t)c * n + j];
      const size_t e = (size_t)i * n + j;
      EXPECT_NEAR(Wd[e], s, 1e-12 * (1 + std::fabs(s)));
      EXPECT_EQ(Wf[e], (float)Wd[e]);
      EXPECT_EQ(Bf[e], (float)((double)B[e] + Wd[e]));
    }
}

// ---- wire form of one matrix --------------------------------------------------------------------

struct WireShape { int in, out, rank; };
constexpr WireShape kWireShapes[] = {{1, 1, 1}, {3, 7, 2}, {7, 3, 3}, {64, 130, 16}, {130, 64, 64}, {1, 51, 1}};

TEST(LowrankWire, RoundTripBitExactAndSize) {
  uint64_t seed = 200;
  for (const auto& sh : kWireShapes) {
    SCOPED_TRACE("in=" + std::to_string(sh.in) + " out=" + std::to_string(sh.out) + " rank=" + std::to_string(sh.rank));
    auto W = to_f(randn((size_t)sh.in * sh.out, ++seed, 0.02));
    auto m = px::lowrank_fit(W.data(), sh.in, sh.out, sh.rank, seed);
    ASSERT_EQ(m.rank, sh.rank);
    m.U[0] = -0.0f;  // signed zero and a subnormal travel bit for bit
    m.V.back() = std::numeric_limits<float>::denorm_min();
    auto wire = px::lowrank_to_wire(m);
    const size_t expect = 16 + 4 * (size_t)sh.rank * (sh.in + sh.out);
    EXPECT_EQ(wire.size(), expect);
    EXPECT_EQ(px::lowrank_wire_bytes(sh.in, sh.out, sh.rank), expect);
    // header: "PXL1", version 1, reserved 0, rank (uint16), in, out (int32), little-endian
    EXPECT_EQ(std::memcmp(wire.data(), "PXL1", 4), 0);
    EXPECT_EQ(wire[4], 1);
    EXPECT_EQ(wire[5], 0);
    EXPECT_EQ(wire[6] | (wire[7] << 8), sh.rank);
    int32_t in = 0, out = 0;
    std::memcpy(&in, wire.data() + 8, 4);
    std::memcpy(&out, wire.data() + 12, 4);
    EXPECT_EQ(in, sh.in);
    EXPECT_EQ(out, sh.out);
    // U then V, fp32, row-major, back to back
    EXPECT_EQ(std::memcmp(wire.data() + 16, m.U.data(), 4 * m.U.size()), 0);
    EXPECT_EQ(std::memcmp(wire.data() + 16 + 4 * m.U.size(), m.V.data(), 4 * m.V.size()), 0);
    auto back = px::lowrank_from_wire(wire.data(), wire.size());
    EXPECT_TRUE(same_bits(back, m));
    EXPECT_EQ(px::lowrank_to_wire(back), wire);
    // append puts it after what is there
    std::vector<uint8_t> buf = {9, 9, 9};
    px::lowrank_append_wire(buf, m);
    ASSERT_EQ(buf.size(), 3 + expect);
    EXPECT_EQ(std::memcmp(buf.data() + 3, wire.data(), expect), 0);
  }
  // an expert-sized matrix: 1024 x 4096 at rank 16 is 16 + 4 * 16 * 5120 bytes, 1/51 of fp32
  EXPECT_EQ(px::lowrank_wire_bytes(1024, 4096, 16), 327696u);
}

void expect_throws_with(const std::vector<uint8_t>& b, const std::string& needle, const std::string& what) {
  try {
    px::lowrank_from_wire(b.data(), b.size());
    ADD_FAILURE() << what << ": no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": " << e.what();
  }
}

TEST(LowrankWire, MalformedBuffersThrow) {
  const int in = 9, out = 5, rank = 3;
  auto W = to_f(randn((size_t)in * out, 300));
  auto m = px::lowrank_fit(W.data(), in, out, rank, 1);
  const auto good = px::lowrank_to_wire(m);
  ASSERT_EQ(good.size(), 16u + 4 * 3 * 14);
  ASSERT_NO_THROW(px::lowrank_from_wire(good.data(), good.size()));
  for (size_t len = 0; len < good.size(); ++len) {
    std::vector<uint8_t> b(good.begin(), good.begin() + len);
    EXPECT_THROW(px::lowrank_from_wire(b.data(), b.size()), std::invalid_argument) << "length " << len;
  }
  auto longer = good;
  longer.push_back(0);
  expect_throws_with(longer, "size", "trailing byte");
  auto put = [&](size_t off, float v) {
    auto b = good;
    std::memcpy(b.data() + off, &v, 4);
    return b;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  expect_throws_with(put(16 + 4 * (2 * rank + 1), nan), "U[2, 1] is nan", "NaN in U");
  expect_throws_with(put(16 + 4 * (in * rank), -inf), "V[0, 0] is -inf", "-inf in V");
  expect_throws_with(put(good.size() - 4, inf), "V[2, 4] is inf", "inf, last value");
  auto hdr = [&](size_t off, int32_t v, size_t bytes) {
    auto b = good;
    std::memcpy(b.data() + off, &v, bytes);
    return b;
  };
  expect_throws_with(hdr(0, 0x12345678, 4), "magic", "magic");
  expect_throws_with(hdr(0, 0x45545850, 4), "magic", "a ternary expert's magic");
  expect_throws_with(hdr(4, 2, 1), "version", "version");
  expect_throws_with(hdr(5, 1, 1), "reserved", "reserved");
  expect_throws_with(hdr(6, 0, 2), "rank 0", "rank 0");
  expect_throws_with(hdr(6, 6, 2), "malformed buffer: rank 6 of [9, 5]", "rank > min(in, out)");
  {  // rank > min(in, out) with a size that matches it
    auto b = hdr(6, 6, 2);
    b.resize(16 + 4 * 6 * (in + out), 0);
    expect_throws_with(b, "malformed buffer: rank 6 of [9, 5]", "rank > min(in, out), consistent size");
  }
  expect_throws_with(hdr(8, 0, 4), "shape", "in = 0");
  expect_throws_with(hdr(12, -5, 4), "shape", "out < 0");
  expect_throws_with(hdr(8, 8, 4), "size", "in one smaller");
  expect_throws_with(hdr(6, 2, 2), "size", "rank one smaller");
  // encoding side: non-finite values, a bad rank or inconsistent sizes are refused
  auto bad = m;
  bad.V[3] = nan;
  EXPECT_THROW(px::lowrank_to_wire(bad), std::invalid_argument);
  bad = m;
  bad.rank = 6;
  EXPECT_THROW(px::lowrank_to_wire(bad), std::invalid_argument);
  bad = m;
  bad.U.pop_back();
  EXPECT_THROW(px::lowrank_to_wire(bad), std::invalid_argument);
  EXPECT_THROW(px::lowrank_wire_bytes(9, 5, 6), std::invalid_argument);
  EXPECT_THROW(px::lowrank_wire_bytes(9, 5, 0), std::invalid_argument);
}

// ---- an expert's view ---------------------------------------------------------------------------

struct Master {
  int d, h;
  ExpertAct kind;
  std::vector<float> W1, W3, W2;
};
// Masters of exact rank k per matrix (so a view of rank >= k reproduces them), or Gaussian.
Master make_master(int d, int h, ExpertAct kind, uint64_t seed, int k = 0) {
  auto mat = [&](int in, int out, uint64_t s) {
    if (k == 0) return to_f(randn((size_t)in * out, s, 0.02));
    std::vector<double> sv(k);
    for (int i = 0; i < k; ++i) sv[i] = 0.5 / (i + 1);
    return to_f(with_spectrum(in, out, sv, s));
  };
  Master m{d, h, kind, {}, {}, {}};
  m.W1 = mat(d, h, seed);
  if (kind == EXPERT_ACT_SWIGLU) m.W3 = mat(d, h, seed + 10);
  m.W2 = mat(h, d, seed + 20);
  return m;
}
LowrankExpertView view_of(const Master& m, int rank, uint64_t seed) {
  return px::lowrank_view_from_master(m.W1.data(), m.W3.empty() ? nullptr : m.W3.data(), m.W2.data(), m.d, m.h,
                                      m.kind, rank, seed);
}
void expect_same_view(const LowrankExpertView& a, const LowrankExpertView& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.d, b.d);
  EXPECT_EQ(a.h, b.h);
  EXPECT_TRUE(same_bits(a.w1, b.w1));
  if (a.kind == EXPERT_ACT_SWIGLU) EXPECT_TRUE(same_bits(a.w3, b.w3));
  EXPECT_TRUE(same_bits(a.w2, b.w2));
}

// Finite factors that may stand for weights past kViewWeightBound (rank * max|U| * max|V|) are
// refused by decoding and encoding (fuzz_views: a delta with |V| = 4.7e36 made the view's
// weights inf), and a sum of a view and a delta past it by lowrank_expert_add, which then leaves
// the view unchanged (fuzz_views: a delta within the bound whose sum was not made the next
// checkpoint's encoding throw).
TEST(LowrankWire, WeightsPastTheBoundAreRefused) {
  const int in = 9, out = 5, rank = 3;
  auto W = to_f(randn((size_t)in * out, 300));
  auto m = px::lowrank_fit(W.data(), in, out, rank, 1);
  auto good = px::lowrank_to_wire(m);
  const size_t v0 = 16 + 4 * (size_t)in * rank;
  auto put = [&](float v) {
    auto b = good;
    std::memcpy(b.data() + v0, &v, 4);
    return b;
  };
  expect_throws_with(put(4.7e36f), "may stand for weights above 1e+08", "huge V");
  auto huge = m;
  huge.V[0] = 4.7e36f;
  EXPECT_THROW(px::lowrank_to_wire(huge), std::invalid_argument);

  // a view and a rank-1 delta of W2 = c e_0 v^T (|v| = 1 / sqrt(out)): the delta's own bound
  // c / sqrt(8) is within 1e8, the sum's factors (rank 4) are not
  const int d = 8, h = 16;
  auto view = view_of(make_master(d, h, EXPERT_ACT_SWIGLU, 700), 4, 3);
  LowrankExpertView delta = view;
  for (LowrankMatrix* x : {&delta.w1, &delta.w3, &delta.w2}) {
    x->rank = 1;
    x->U.assign((size_t)x->in, 1e-3f);
    x->V.assign((size_t)x->out, 1e-3f);
  }
  delta.w2.U.assign((size_t)h, 0.f);
  delta.w2.U[0] = 2e8f;
  delta.w2.V.assign((size_t)d, 1.f / std::sqrt((float)d));
  const auto wire = px::lowrank_expert_to_wire(delta);
  const auto got = px::lowrank_expert_from_wire(wire.data(), wire.size());  // within the bound alone
  auto island = view;
  try {
    px::lowrank_expert_add(island, got);
    ADD_FAILURE() << "a sum past the weight bound was added";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("the view plus the delta"), std::string::npos) << e.what();
  }
  expect_same_view(island, view);  // W1 and W3 were within the bound: all or nothing
  px::lowrank_expert_to_wire(island);
}

TEST(LowrankView, ExpertWireRoundTrip) {
  for (ExpertAct kind : {EXPERT_ACT_SWIGLU, EXPERT_ACT_RELU2}) {
    for (auto [d, h, r] : {std::tuple{8, 6, 2}, std::tuple{64, 96, 16}, std::tuple{33, 7, 20}}) {
      SCOPED_TRACE("kind=" + std::to_string(kind) + " d=" + std::to_string(d) + " h=" + std::to_string(h) +
                   " rank=" + std::to_string(r));
      auto v = view_of(make_master(d, h, kind, 400 + d + h), r, 3);
      const int rr = std::min({r, d, h});  // clamped
      EXPECT_EQ(v.w1.rank, rr);
      EXPECT_EQ(v.w2.rank, rr);
      auto wire = px::lowrank_expert_to_wire(v);
      const size_t mat = 16 + 4 * (size_t)rr * (d + h);
      const size_t expect = 16 + (kind == EXPERT_ACT_SWIGLU ? 3 : 2) * mat;
      EXPECT_EQ(wire.size(), expect);
      EXPECT_EQ(v.wire_bytes(), expect);
      EXPECT_EQ(px::lowrank_expert_wire_bytes(kind, d, h, r), expect);
      EXPECT_EQ(std::memcmp(wire.data(), "PXLE", 4), 0);
      EXPECT_EQ(wire[6], (uint8_t)kind);
      auto back = px::lowrank_expert_from_wire(wire.data(), wire.size());
      expect_same_view(back, v);
      if (kind == EXPERT_ACT_RELU2) EXPECT_TRUE(back.w3.U.empty());
      EXPECT_EQ(px::lowrank_expert_to_wire(back), wire);
      for (size_t len = 0; len < wire.size(); ++len)
        EXPECT_THROW(px::lowrank_expert_from_wire(wire.data(), len), std::invalid_argument) << "length " << len;
      auto longer = wire;
      longer.push_back(0);
      EXPECT_THROW(px::lowrank_expert_from_wire(longer.data(), longer.size()), std::invalid_argument);
      auto badact = wire;
      badact[6] = 2;
      EXPECT_THROW(px::lowrank_expert_from_wire(badact.data(), badact.size()), std::invalid_argument);
      auto badres = wire;
      badres[7] = 1;
      EXPECT_THROW(px::lowrank_expert_from_wire(badres.data(), badres.size()), std::invalid_argument);
      auto nan = wire;  // a NaN in W2's V (the last value)
      const float q = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(nan.data() + nan.size() - 4, &q, 4);
      try {
        px::lowrank_expert_from_wire(nan.data(), nan.size());
        ADD_FAILURE() << "no exception for a NaN";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("W2: malformed buffer: V["), std::string::npos) << e.what();
      }
    }
  }
  // an expert header that lies about d and h (swapped): same total size, so only the check of
  // each matrix's shape against d and h catches it
  auto v = view_of(make_master(16, 24, EXPERT_ACT_RELU2, 450), 4, 1);
  auto wire = px::lowrank_expert_to_wire(v);
  auto lie = wire;
  int32_t d2 = 24, h2 = 16;
  std::memcpy(lie.data() + 8, &d2, 4);
  std::memcpy(lie.data() + 12, &h2, 4);
  try {
    px::lowrank_expert_from_wire(lie.data(), lie.size());
    ADD_FAILURE() << "no exception for a W1 of the wrong shape";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("W1 is [16, 24], expected [24, 16]"), std::string::npos) << e.what();
  }
  // encoding side: a matrix of the wrong shape, an unknown activation
  auto badv = v;
  badv.w2 = v.w1;
  EXPECT_THROW(px::lowrank_expert_to_wire(badv), std::invalid_argument);
  badv = v;
  badv.kind = (ExpertAct)5;
  EXPECT_THROW(px::lowrank_expert_to_wire(badv), std::invalid_argument);
}

// Masters of exact rank 5 seen at rank 8: dequantize gives them back to fp32 precision; relu2
// leaves W3 alone (may be null); float and double dequantize agree (float = double rounded once);
// a double master gives the same view as its fp32 values; bad arguments throw.
TEST(LowrankView, DequantizeAndRelu2) {
  const int d = 48, h = 80;
  for (ExpertAct kind : {EXPERT_ACT_SWIGLU, EXPERT_ACT_RELU2}) {
    SCOPED_TRACE(kind == EXPERT_ACT_SWIGLU ? "swiglu" : "relu2");
    auto master = make_master(d, h, kind, 500 + kind, 5);
    auto v = view_of(master, 8, 11);
    std::vector<double> W1((size_t)d * h), W3((size_t)d * h, 7.0), W2((size_t)h * d);
    v.dequantize(W1.data(), kind == EXPERT_ACT_SWIGLU ? W3.data() : nullptr, W2.data());
    auto rel = [](const std::vector<float>& M, const std::vector<double>& D) {
      double num = 0, den = 0;
      for (size_t e = 0; e < M.size(); ++e) num += (M[e] - D[e]) * (M[e] - D[e]), den += (double)M[e] * M[e];
      return std::sqrt(num / den);
    };
    EXPECT_LT(rel(master.W1, W1), 1e-5);
    EXPECT_LT(rel(master.W2, W2), 1e-5);
    if (kind == EXPERT_ACT_SWIGLU) EXPECT_LT(rel(master.W3, W3), 1e-5);
    else EXPECT_EQ(W3[0], 7.0) << "relu2: W3 must not be written";
    if (kind == EXPERT_ACT_RELU2) EXPECT_TRUE(v.w3.U.empty() && v.w3.V.empty());
    std::vector<float> F1((size_t)d * h), F3((size_t)d * h, 7.f), F2((size_t)h * d);
    v.dequantize(F1.data(), F3.data(), F2.data());
    for (size_t e = 0; e < F1.size(); ++e) {
      ASSERT_EQ(F1[e], (float)W1[e]);
      ASSERT_EQ(F2[e], (float)W2[e]);
      if (kind == EXPERT_ACT_SWIGLU) ASSERT_EQ(F3[e], (float)W3[e]);
    }
    if (kind == EXPERT_ACT_RELU2) EXPECT_EQ(F3[0], 7.f);
    // the three matrices get their own seeds: W1 is lowrank_fit(W1, seed splitmix64(seed + 0))
    EXPECT_TRUE(same_bits(v.w1, px::lowrank_fit(master.W1.data(), d, h, 8, px::splitmix64(11))));
    EXPECT_TRUE(same_bits(v.w2, px::lowrank_fit(master.W2.data(), h, d, 8, px::splitmix64(11 + 2))));
    // double masters: rounded to fp32 first
    std::vector<double> M1(master.W1.begin(), master.W1.end()), M3(master.W3.begin(), master.W3.end()),
        M2(master.W2.begin(), master.W2.end());
    auto vd = px::lowrank_view_from_master(M1.data(), M3.empty() ? nullptr : M3.data(), M2.data(), d, h, kind, 8, 11);
    expect_same_view(vd, v);
  }
  auto m = make_master(8, 6, EXPERT_ACT_SWIGLU, 9);
  EXPECT_THROW(px::lowrank_view_from_master(m.W1.data(), (const float*)nullptr, m.W2.data(), 8, 6, EXPERT_ACT_SWIGLU, 2, 1),
               std::invalid_argument);
  EXPECT_THROW(px::lowrank_view_from_master(m.W1.data(), m.W3.data(), m.W2.data(), 8, 6, (ExpertAct)3, 2, 1),
               std::invalid_argument);
  EXPECT_THROW(px::lowrank_view_from_master(m.W1.data(), m.W3.data(), m.W2.data(), 8, 6, EXPERT_ACT_SWIGLU, 0, 1),
               std::invalid_argument);
}

// An expert's refresh: the masters move by a small rank-2 change each; the expert delta (rank 8,
// through the wire as a home would send it) plus lowrank_expert_add brings every matrix within
// 1.05x of its new optimal rank-r error; kinds and shapes must agree.
TEST(LowrankView, ExpertDeltaAndAdd) {
  const int d = 64, h = 96, r = 12;
  for (ExpertAct kind : {EXPERT_ACT_SWIGLU, EXPERT_ACT_RELU2}) {
    SCOPED_TRACE(kind == EXPERT_ACT_SWIGLU ? "swiglu" : "relu2");
    Master m{d, h, kind, {}, {}, {}};
    auto mat = [&](int in, int out, uint64_t s) { return with_spectrum(in, out, geometric(std::min(in, out), 0.8), s); };
    std::vector<std::vector<double>> M = {mat(d, h, 600), mat(d, h, 610), mat(h, d, 620)};
    m.W1 = to_f(M[0]);
    if (kind == EXPERT_ACT_SWIGLU) m.W3 = to_f(M[1]);
    m.W2 = to_f(M[2]);
    auto view = view_of(m, r, 21);
    // move every master: + 0.25 x y^T + 0.15 x' y'^T
    Master m2 = m;
    auto move = [&](std::vector<float>& W, const std::vector<double>& base, int in, int out, uint64_t s) {
      auto X = orthonormal(in, 2, s), Y = orthonormal(out, 2, s + 1);
      for (int i = 0; i < in; ++i)
        for (int j = 0; j < out; ++j)
          W[(size_t)i * out + j] = (float)(base[(size_t)i * out + j] + 0.25 * X[(size_t)i * 2] * Y[(size_t)j * 2] +
                                           0.15 * X[(size_t)i * 2 + 1] * Y[(size_t)j * 2 + 1]);
    };
    move(m2.W1, M[0], d, h, 630);
    if (kind == EXPERT_ACT_SWIGLU) move(m2.W3, M[1], d, h, 640);
    move(m2.W2, M[2], h, d, 650);
    auto delta = px::lowrank_expert_delta(m2.W1.data(), m2.W3.empty() ? nullptr : m2.W3.data(), m2.W2.data(), view,
                                          8, 22);
    EXPECT_EQ(delta.w1.rank, 8);
    EXPECT_EQ(delta.w2.rank, 8);
    auto wire = px::lowrank_expert_to_wire(delta);
    EXPECT_EQ(wire.size(), px::lowrank_expert_wire_bytes(kind, d, h, 8));
    auto got = px::lowrank_expert_from_wire(wire.data(), wire.size());
    auto island = view, home = view;
    px::lowrank_expert_add(island, got);
    px::lowrank_expert_add(home, delta);
    expect_same_view(island, home);  // home and island stay bit-identical
    EXPECT_EQ(island.w1.rank, r);
    EXPECT_EQ(island.wire_bytes(), view.wire_bytes());
    auto check = [&](const char* name, const std::vector<float>& W, const LowrankMatrix& before,
                     const LowrankMatrix& after, int in, int out) {
      const double opt = optimal_err(W, in, out, r), e0 = fit_err(W, before), e1 = fit_err(W, after);
      std::printf("[ expert delta %s %s ] optimal %.5f, before %.5f (%.3fx), after %.5f (%.4fx)\n",
                  kind == EXPERT_ACT_SWIGLU ? "swiglu" : "relu2", name, opt, e0, e0 / opt, e1, e1 / opt);
      EXPECT_GT(e0 / opt, 1.5) << name;
      EXPECT_LT(e1 / opt, 1.05) << name;
    };
    check("W1", m2.W1, view.w1, island.w1, d, h);
    if (kind == EXPERT_ACT_SWIGLU) check("W3", m2.W3, view.w3, island.w3, d, h);
    check("W2", m2.W2, view.w2, island.w2, h, d);
    // mismatches are refused, and leave the view as it was
    auto other = view_of(make_master(h, d, kind, 660), r, 1);
    auto keep = island;
    EXPECT_THROW(px::lowrank_expert_add(island, other), std::invalid_argument);
    expect_same_view(island, keep);
    auto wrong_kind = delta;
    wrong_kind.kind = kind == EXPERT_ACT_SWIGLU ? EXPERT_ACT_RELU2 : EXPERT_ACT_SWIGLU;
    if (kind == EXPERT_ACT_RELU2) wrong_kind.w3 = delta.w1;
    EXPECT_THROW(px::lowrank_expert_add(island, wrong_kind), std::invalid_argument);
  }
}

// The model-arena overload picks routed expert e of an MoE layer: W1, W3, W2 from the
// "layers.<l>.moe.experts.*" tensors, the e-th [d, h] / [h, d] block of each.
TEST(LowrankView, FromTheModelArena) {
  px::ModelConfig c;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.vocab = 11;
  c.seq_len = 4;
  c.dense_layers = 1;
  c.n_experts = 3;
  c.top_k = 1;
  c.expert_hidden = 24;
  for (auto act : {px::ExpertActKind::SWIGLU, px::ExpertActKind::RELU2}) {
    c.expert_act = act;
    px::MoeModel<float> model(c, 1, c.seq_len);
    model.init_params(3);
    const float* ex = model.params(px::Arena::EXPERTS);
    auto tensor = [&](const std::string& name) -> const float* {
      for (const auto& s : model.layout().specs)
        if (s.name == name) return ex + s.offset;
      return nullptr;
    };
    const size_t wsz = (size_t)c.d_model * c.expert_hidden;
    const int e = 2, r = 4;
    const uint64_t seed = 99;
    auto v = px::lowrank_view_from_master(c, model.layout(), ex, 1, e, r, seed);
    const bool glu = act == px::ExpertActKind::SWIGLU;
    EXPECT_EQ(v.kind, glu ? EXPERT_ACT_SWIGLU : EXPERT_ACT_RELU2);
    EXPECT_TRUE(same_bits(v.w1, px::lowrank_fit(tensor("layers.1.moe.experts.w1") + e * wsz, c.d_model,
                                                c.expert_hidden, r, px::splitmix64(seed))));
    EXPECT_TRUE(same_bits(v.w2, px::lowrank_fit(tensor("layers.1.moe.experts.w2") + e * wsz, c.expert_hidden,
                                                c.d_model, r, px::splitmix64(seed + 2))));
    if (glu)
      EXPECT_TRUE(same_bits(v.w3, px::lowrank_fit(tensor("layers.1.moe.experts.w3") + e * wsz, c.d_model,
                                                  c.expert_hidden, r, px::splitmix64(seed + 1))));
    else
      EXPECT_TRUE(v.w3.U.empty());
    EXPECT_THROW(px::lowrank_view_from_master(c, model.layout(), ex, 0, 0, r, seed), std::invalid_argument);
    EXPECT_THROW(px::lowrank_view_from_master(c, model.layout(), ex, 1, 3, r, seed), std::invalid_argument);
  }
}

}  // namespace
