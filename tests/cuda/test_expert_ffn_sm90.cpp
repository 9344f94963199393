// Hopper wgmma path of the grouped expert FFN (expert_ffn_forward_sm90 / _backward_sm90,
// called directly, not through PX_EXPERT_GEMM) vs px::cpu::expert_ffn_forward/backward.
// Skips unless the device is compute capability 9.0.
#include "test_util.hpp"

#include "expert_ffn_sm90.cuh"  // defines: px::cuda::expert_ffn_{forward,backward}_sm90
#include "moe_permute.cuh"      // defines: px::cuda::moe_permute_build, gather_rows, combine_rows
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu reference ops

using namespace px::test;
using px::cpu::ExpertAct;

#define PX_SKIP_IF_NO_SM90()                                                          \
  do {                                                                                \
    if (!::px::cuda::device_available()) GTEST_SKIP() << "no CUDA device";            \
    if (!::px::cuda::expert_ffn_sm90_available()) GTEST_SKIP() << "not an sm_90 device"; \
  } while (0)

namespace {

std::vector<int32_t> make_bounds(const std::vector<int>& counts) {
  std::vector<int32_t> b(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) b[e + 1] = b[e] + counts[e];
  return b;
}

// Rows [rows, cap) of a [cap, cols] buffer: NaN in the inputs (the TMA boxes read them; their
// products must never reach a written row), and left unwritten in the outputs (still NaN).
void nan_tail(std::vector<bf16>& v, int rows, int cols) {
  for (size_t i = (size_t)rows * cols; i < v.size(); ++i) v[i] = __float2bfloat16(NAN);
}
std::vector<float> head(const std::vector<float>& v, int rows, int cols) {
  return std::vector<float>(v.begin(), v.begin() + (size_t)rows * cols);
}
bool tail_untouched(const std::vector<float>& v, int rows, int cols) {
  for (size_t i = (size_t)rows * cols; i < v.size(); ++i)
    if (!std::isnan(v[i])) return false;
  return true;
}

// counts: rows per expert; extra: rows_cap - bounds[E] (tail rows, NaN inputs).
void ffn_case_sm90(ExpertAct kind, std::vector<int> counts, int d, int h, uint64_t seed,
                   int extra = 0, bool with_dw = true) {
  const int E = (int)counts.size();
  auto bounds = make_bounds(counts);
  const int rows = bounds[E], cap = rows + extra;
  const bool sw = kind == px::cpu::EXPERT_ACT_SWIGLU;
  auto X = round_bf16(randn((size_t)rows * d, seed));
  auto W1 = round_bf16(randn((size_t)E * d * h, seed + 1, 0.08f));
  auto W3 = round_bf16(randn((size_t)E * d * h, seed + 2, 0.08f));
  auto W2 = round_bf16(randn((size_t)E * h * d, seed + 3, 0.08f));
  auto dY = round_bf16(randn((size_t)rows * d, seed + 4));
  auto dW0 = randn((size_t)E * d * h, seed + 5, 0.1f);  // gradients accumulate onto this
  // CPU forward
  std::vector<float> Y((size_t)rows * d), A((size_t)rows * h), Bm((size_t)rows * h),
      act((size_t)rows * h);
  px::cpu::expert_ffn_forward<float>(Y.data(), A.data(), Bm.data(), act.data(), X.data(),
                                     W1.data(), sw ? W3.data() : nullptr, W2.data(),
                                     bounds.data(), E, d, h, kind);
  // GPU forward (buffers of cap rows, NaN tail rows in the inputs)
  auto hX = to_bf16(X), hdY = to_bf16(dY);
  hX.resize((size_t)cap * d);
  hdY.resize((size_t)cap * d);
  nan_tail(hX, rows, d);
  nan_tail(hdY, rows, d);
  DBuf<int32_t> dbounds(bounds);
  DBuf<bf16> gX(hX), gW1(to_bf16(W1)), gW3(to_bf16(W3)), gW2(to_bf16(W2));
  DBuf<bf16> gY((size_t)cap * d), gA((size_t)cap * h), gB((size_t)cap * h),
      gact((size_t)cap * h);
  gY.poison(); gA.poison(); gB.poison(); gact.poison();
  px::cuda::expert_ffn_forward_sm90(gY.p, gA.p, gB.p, gact.p, gX.p, gW1.p, sw ? gW3.p : nullptr,
                                    gW2.p, dbounds.p, cap, E, d, h, kind);
  cudaCheck(cudaGetLastError());
  auto fA = to_f32(gA.download()), fB = to_f32(gB.download()), fact = to_f32(gact.download());
  auto fY = to_f32(gY.download());
  auto hA = head(fA, rows, h), hB = head(fB, rows, h), hact = head(fact, rows, h);
  EXPECT_LT(rel_err(hA, A), kTolBF16);
  if (sw) {
    EXPECT_LT(rel_err(hB, Bm), kTolBF16);
  }
  EXPECT_LT(rel_err(hact, act), kTolBF16);
  EXPECT_LT(rel_err(head(fY, rows, d), Y), kTolBF16);
  EXPECT_TRUE(tail_untouched(fY, rows, d)) << "forward wrote rows past bounds[E]";
  EXPECT_TRUE(tail_untouched(fact, rows, h)) << "forward wrote rows past bounds[E]";
  // CPU backward fed with the GPU's saved activations (both sides see the same inputs).
  std::vector<float> dX((size_t)rows * d), dW1 = dW0, dW3 = dW0, dW2 = dW0;
  std::vector<float> s1((size_t)rows * h), s2((size_t)rows * h), s3((size_t)rows * h);
  // (scratch: s1 = dact, s2 = dA, s3 = dB)
  px::cpu::expert_ffn_backward<float>(dX.data(), dW1.data(), sw ? dW3.data() : nullptr,
                                      dW2.data(), dY.data(), X.data(), hA.data(),
                                      sw ? hB.data() : nullptr, hact.data(), W1.data(),
                                      sw ? W3.data() : nullptr, W2.data(), bounds.data(), E, d,
                                      h, kind, s1.data(), s2.data(), s3.data());
  DBuf<bf16> gdY(hdY), gdX((size_t)cap * d), gdA((size_t)cap * h), gdB((size_t)cap * h);
  DBuf<float> gdW1(dW0), gdW3(dW0), gdW2(dW0);
  gdX.poison(); gdA.poison(); gdB.poison();
  px::cuda::expert_ffn_backward_sm90(gdX.p, with_dw ? gdW1.p : nullptr,
                                     with_dw && sw ? gdW3.p : nullptr,
                                     with_dw ? gdW2.p : nullptr, gdY.p, gX.p, gA.p, gB.p,
                                     gact.p, gW1.p, sw ? gW3.p : nullptr, gW2.p, dbounds.p, cap,
                                     E, d, h, kind, gdA.p, gdB.p);
  cudaCheck(cudaGetLastError());
  auto fdX = to_f32(gdX.download());
  EXPECT_LT(rel_err(head(fdX, rows, d), dX), kTolBF16);
  EXPECT_TRUE(tail_untouched(fdX, rows, d)) << "dX past bounds[E]";
  // dact: dA (and dB) against the CPU's
  EXPECT_LT(rel_err(head(to_f32(gdA.download()), rows, h), s2), kTolBF16);
  if (sw) {
    EXPECT_LT(rel_err(head(to_f32(gdB.download()), rows, h), s3), kTolBF16);
  }
  if (!with_dw) {  // frozen: the weight gradients are untouched
    EXPECT_EQ(gdW1.download(), dW0);
    EXPECT_EQ(gdW2.download(), dW0);
    return;
  }
  EXPECT_LT(rel_err(gdW1.download(), dW1), kTolBF16);
  if (sw) {
    EXPECT_LT(rel_err(gdW3.download(), dW3), kTolBF16);
  }
  EXPECT_LT(rel_err(gdW2.download(), dW2), kTolBF16);
  // The part beyond the initial values (accumulated, +=) must be right too.
  auto g1 = gdW1.download();
  std::vector<float> inc_gpu(g1.size()), inc_cpu(g1.size());
  for (size_t i = 0; i < g1.size(); ++i) { inc_gpu[i] = g1[i] - dW0[i]; inc_cpu[i] = dW1[i] - dW0[i]; }
  EXPECT_LT(rel_err(inc_gpu, inc_cpu), kTolBF16);
}

}  // namespace

TEST(CudaExpertFfnSm90, SwigluUneven) {
  PX_SKIP_IF_NO_SM90();
  ffn_case_sm90(px::cpu::EXPERT_ACT_SWIGLU, {37, 0, 300, 129, 1, 64, 250, 18}, 200, 72, 7000);
}
TEST(CudaExpertFfnSm90, Relu2Uneven) {
  PX_SKIP_IF_NO_SM90();
  ffn_case_sm90(px::cpu::EXPERT_ACT_RELU2, {5, 140, 0, 256, 77}, 136, 264, 7100);
}
TEST(CudaExpertFfnSm90, SwigluLarger) {
  PX_SKIP_IF_NO_SM90();
  ffn_case_sm90(px::cpu::EXPERT_ACT_SWIGLU, {512, 300, 700, 0, 1000, 64}, 256, 384, 7200);
}
// Empty experts first / middle / last, a 1-row expert, segments not multiples of the 128-row
// tile, d and h not multiples of the 64-wide K tile nor of the 128/256-wide column tiles, K
// long enough to cycle the 4 stages several times; tail rows past bounds[E] (NaN inputs).
TEST(CudaExpertFfnSm90, SwigluVeryUneven) {
  PX_SKIP_IF_NO_SM90();
  ffn_case_sm90(px::cpu::EXPERT_ACT_SWIGLU, {0, 1, 300, 0, 517, 129, 2, 0}, 584, 328, 7400, 77);
}
TEST(CudaExpertFfnSm90, Relu2VeryUneven) {
  PX_SKIP_IF_NO_SM90();
  ffn_case_sm90(px::cpu::EXPERT_ACT_RELU2, {1, 0, 383, 127, 0, 600}, 328, 584, 7500, 130);
}
// Smallest legal widths (d, h = 8 and 16: one partial box everywhere).
TEST(CudaExpertFfnSm90, TinyWidths) {
  PX_SKIP_IF_NO_SM90();
  ffn_case_sm90(px::cpu::EXPERT_ACT_SWIGLU, {3, 0, 130}, 8, 16, 7600);
  ffn_case_sm90(px::cpu::EXPERT_ACT_RELU2, {129, 2}, 16, 8, 7650);
}
// Null dW pointers: dX, dA, dB still computed, weight gradients untouched.
TEST(CudaExpertFfnSm90, FrozenWeights) {
  PX_SKIP_IF_NO_SM90();
  ffn_case_sm90(px::cpu::EXPERT_ACT_SWIGLU, {40, 200, 0, 90}, 136, 200, 7700, 5, false);
}

// The weight-gradient kernel alone (expert_ffn_wgrad_sm90) vs loops on the CPU, onto nonzero
// initial dW, with NaN rows past bounds[E] (the last K tile of the last expert reads them).
TEST(CudaExpertFfnSm90, WeightGradients) {
  PX_SKIP_IF_NO_SM90();
  for (int sw = 0; sw < 2; ++sw) {
    const std::vector<int> counts = {70, 0, 1, 255, 64, 129};
    const int E = (int)counts.size(), d = 200, h = 136, extra = 40;
    auto bounds = make_bounds(counts);
    const int rows = bounds[E], cap = rows + extra;
    const uint64_t seed = 7800 + sw * 10;
    auto X = round_bf16(randn((size_t)rows * d, seed)), dY = round_bf16(randn((size_t)rows * d, seed + 1));
    auto act = round_bf16(randn((size_t)rows * h, seed + 2)), dA = round_bf16(randn((size_t)rows * h, seed + 3));
    auto dB = round_bf16(randn((size_t)rows * h, seed + 4));
    auto dW0 = randn((size_t)E * d * h, seed + 5, 0.5f);
    std::vector<double> r1(dW0.begin(), dW0.end()), r3 = r1, r2 = r1;
    for (int e = 0; e < E; ++e)
      for (int r = bounds[e]; r < bounds[e + 1]; ++r) {
        for (int i = 0; i < d; ++i)
          for (int j = 0; j < h; ++j) {
            const size_t o = (size_t)e * d * h + (size_t)i * h + j;
            r1[o] += (double)X[(size_t)r * d + i] * dA[(size_t)r * h + j];
            r3[o] += (double)X[(size_t)r * d + i] * dB[(size_t)r * h + j];
          }
        for (int j = 0; j < h; ++j)
          for (int i = 0; i < d; ++i)
            r2[(size_t)e * h * d + (size_t)j * d + i] +=
                (double)act[(size_t)r * h + j] * dY[(size_t)r * d + i];
      }
    auto up = [&](const std::vector<float>& v, int cols) {
      auto b = to_bf16(v);
      b.resize((size_t)cap * cols);
      nan_tail(b, rows, cols);
      return b;
    };
    DBuf<int32_t> gb(bounds);
    DBuf<bf16> gX(up(X, d)), gdY(up(dY, d)), gact(up(act, h)), gdA(up(dA, h)), gdB(up(dB, h));
    DBuf<float> g1(dW0), g3(dW0), g2(dW0);
    const ExpertAct kind = sw ? px::cpu::EXPERT_ACT_SWIGLU : px::cpu::EXPERT_ACT_RELU2;
    px::cuda::expert_ffn_wgrad_sm90(g1.p, sw ? g3.p : nullptr, g2.p, gdY.p, gX.p, gact.p, gdA.p,
                                    gdB.p, gb.p, cap, E, d, h, kind);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(g1.download(), r1), kTolBF16) << "dW1, swiglu " << sw;
    EXPECT_LT(rel_err(g2.download(), r2), kTolBF16) << "dW2, swiglu " << sw;
    if (sw) {
      EXPECT_LT(rel_err(g3.download(), r3), kTolBF16);
    } else {
      EXPECT_EQ(g3.download(), dW0);  // relu2: dW3 untouched
    }
    // the increments alone
    auto h1 = g1.download();
    std::vector<double> inc_gpu(h1.size()), inc_ref(h1.size());
    for (size_t i = 0; i < h1.size(); ++i) { inc_gpu[i] = (double)h1[i] - dW0[i]; inc_ref[i] = r1[i] - dW0[i]; }
    EXPECT_LT(rel_err(inc_gpu, inc_ref), kTolBF16);
  }
}

// Enough tiles that every block of the persistent kernels (one per SM) walks several tiles,
// so the pipeline's stage / phase counters run on across tiles (~800 tiles in the up GEMM).
TEST(CudaExpertFfnSm90, ManyTilesPerBlock) {
  PX_SKIP_IF_NO_SM90();
  std::vector<int> counts(16);
  for (int e = 0; e < 16; ++e) counts[e] = 600 + 173 * e % 1400 + (e == 5 ? 1 : 0);
  counts[9] = 0;
  ffn_case_sm90(px::cpu::EXPERT_ACT_SWIGLU, counts, 256, 512, 7900, 3);
}

// Tile-aligned layout from the GPU permute (align 128: padding rows are zero), as in
// CudaExpertFfn.AlignedSegmentsFromPermute: results on the real rows match the CPU.
TEST(CudaExpertFfnSm90, AlignedSegmentsFromPermute) {
  PX_SKIP_IF_NO_SM90();
  const int N = 400, E = 8, k = 2, d = 128, h = 64, align = 128;
  std::mt19937_64 g(8000);
  std::vector<int32_t> idx((size_t)N * k);
  for (int n = 0; n < N; ++n) {
    int a = g() % E, b = (a + 1 + g() % (E - 1)) % E;
    idx[(size_t)n * k] = a; idx[(size_t)n * k + 1] = b;
  }
  std::vector<int32_t> b(E + 1), p((size_t)N * k), r((size_t)N * k);
  px::cpu::moe_permute_build(b.data(), p.data(), r.data(), idx.data(), N, E, k);
  auto X = round_bf16(randn((size_t)N * d, 8001));
  auto W1 = round_bf16(randn((size_t)E * d * h, 8002, 0.08f));
  auto W3 = round_bf16(randn((size_t)E * d * h, 8003, 0.08f));
  auto W2 = round_bf16(randn((size_t)E * h * d, 8004, 0.08f));
  const int rows = N * k;
  std::vector<float> Xp((size_t)rows * d);
  px::cpu::gather_rows<float>(Xp.data(), X.data(), r.data(), rows, d);
  std::vector<float> Y((size_t)rows * d), A((size_t)rows * h), Bm((size_t)rows * h),
      act((size_t)rows * h);
  px::cpu::expert_ffn_forward<float>(Y.data(), A.data(), Bm.data(), act.data(), Xp.data(),
                                     W1.data(), W3.data(), W2.data(), b.data(), E, d, h,
                                     px::cpu::EXPERT_ACT_SWIGLU);
  std::vector<float> out((size_t)N * d, 0.f), gates((size_t)N * k, 0.5f);
  px::cpu::combine_rows<float>(out.data(), Y.data(), gates.data(), p.data(), N, k, d);

  const long cap = px::cuda::moe_permuted_capacity(N, E, k, align);
  DBuf<int32_t> gidx(idx), gb(E + 1), gp((size_t)N * k), gr(cap);
  DBuf<char> scratch(px::cuda::moe_permute_scratch_bytes(N, E, k));
  px::cuda::moe_permute_build(gb.p, gp.p, gr.p, gidx.p, N, E, k, align, scratch.p);
  DBuf<bf16> gX(to_bf16(X)), gXp(cap * d), gW1(to_bf16(W1)), gW3(to_bf16(W3)), gW2(to_bf16(W2));
  DBuf<bf16> gY(cap * d), gA(cap * h), gB(cap * h), gact(cap * h);
  gXp.poison(); gY.poison();
  px::cuda::gather_rows<bf16>(gXp.p, gX.p, gr.p, (int)cap, d);
  px::cuda::expert_ffn_forward_sm90(gY.p, gA.p, gB.p, gact.p, gXp.p, gW1.p, gW3.p, gW2.p, gb.p,
                                    (int)cap, E, d, h, px::cpu::EXPERT_ACT_SWIGLU);
  DBuf<float> gout((size_t)N * d), gg(gates);
  cudaCheck(cudaMemset(gout.p, 0, gout.n * sizeof(float)));
  px::cuda::combine_rows<float, bf16>(gout.p, gY.p, gg.p, gp.p, N, k, d);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gout.download(), out), kTolBF16);
  auto hb = gb.download();
  auto hY = to_f32(gY.download());
  auto hr = gr.download();
  for (int i = 0; i < hb[E]; ++i) {
    if (hr[i] >= 0) continue;
    for (int c = 0; c < d; ++c) ASSERT_EQ(hY[(size_t)i * d + c], 0.f) << "padding row " << i;
  }
}
