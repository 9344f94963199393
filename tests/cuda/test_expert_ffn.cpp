// Grouped expert FFN (bf16 tensor cores) vs px::cpu::expert_ffn_forward/backward.
#include "test_util.hpp"

#include "expert_ffn.cuh"       // defines: px::cuda::expert_ffn_forward/backward
#include "moe_permute.cuh"      // defines: px::cuda::moe_permute_build, gather_rows
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu reference ops

using namespace px::test;
using px::cpu::ExpertAct;

namespace {

// Segment bounds with uneven counts, one empty expert, one larger than a tile.
std::vector<int32_t> make_bounds(const std::vector<int>& counts) {
  std::vector<int32_t> b(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) b[e + 1] = b[e] + counts[e];
  return b;
}

void ffn_case(ExpertAct kind, std::vector<int> counts, int d, int h, uint64_t seed) {
  const int E = (int)counts.size();
  auto bounds = make_bounds(counts);
  const int rows = bounds[E];
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
  // GPU forward
  DBuf<int32_t> dbounds(bounds);
  DBuf<bf16> gX(to_bf16(X)), gW1(to_bf16(W1)), gW3(to_bf16(W3)), gW2(to_bf16(W2));
  DBuf<bf16> gY((size_t)rows * d), gA((size_t)rows * h), gB((size_t)rows * h),
      gact((size_t)rows * h);
  gY.poison(); gA.poison(); gB.poison(); gact.poison();
  px::cuda::expert_ffn_forward(gY.p, gA.p, gB.p, gact.p, gX.p, gW1.p, gW3.p, gW2.p, dbounds.p,
                               rows, E, d, h, kind);
  cudaCheck(cudaGetLastError());
  auto hA = to_f32(gA.download()), hB = to_f32(gB.download()), hact = to_f32(gact.download());
  EXPECT_LT(rel_err(hA, A), kTolBF16);
  if (sw) EXPECT_LT(rel_err(hB, Bm), kTolBF16);
  EXPECT_LT(rel_err(hact, act), kTolBF16);
  EXPECT_LT(rel_err(gY.download(), Y), kTolBF16);
  // CPU backward fed with the GPU's saved activations (both sides see the same inputs).
  std::vector<float> dX((size_t)rows * d), dW1 = dW0, dW3 = dW0, dW2 = dW0;
  std::vector<float> s1((size_t)rows * h), s2((size_t)rows * h), s3((size_t)rows * h);
  px::cpu::expert_ffn_backward<float>(dX.data(), dW1.data(), sw ? dW3.data() : nullptr,
                                      dW2.data(), dY.data(), X.data(), hA.data(),
                                      sw ? hB.data() : nullptr, hact.data(), W1.data(),
                                      sw ? W3.data() : nullptr, W2.data(), bounds.data(), E, d,
                                      h, kind, s1.data(), s2.data(), s3.data());
  DBuf<bf16> gdY(to_bf16(dY)), gdX((size_t)rows * d), gdA((size_t)rows * h),
      gdB((size_t)rows * h);
  DBuf<float> gdW1(dW0), gdW3(dW0), gdW2(dW0);
  gdX.poison(); gdA.poison(); gdB.poison();
  px::cuda::expert_ffn_backward(gdX.p, gdW1.p, sw ? gdW3.p : nullptr, gdW2.p, gdY.p, gX.p, gA.p,
                                gB.p, gact.p, gW1.p, gW3.p, gW2.p, dbounds.p, rows, E, d, h,
                                kind, gdA.p, gdB.p);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gdX.download(), dX), kTolBF16);
  EXPECT_LT(rel_err(gdW1.download(), dW1), kTolBF16);
  if (sw) EXPECT_LT(rel_err(gdW3.download(), dW3), kTolBF16);
  EXPECT_LT(rel_err(gdW2.download(), dW2), kTolBF16);
  // The weight-gradient part beyond the initial values must be right too.
  auto g1 = gdW1.download();
  std::vector<float> inc_gpu(g1.size()), inc_cpu(g1.size());
  for (size_t i = 0; i < g1.size(); ++i) { inc_gpu[i] = g1[i] - dW0[i]; inc_cpu[i] = dW1[i] - dW0[i]; }
  EXPECT_LT(rel_err(inc_gpu, inc_cpu), kTolBF16);
}

}  // namespace

TEST(CudaExpertFfn, SwigluUneven) {
  PX_SKIP_IF_NO_GPU();
  ffn_case(px::cpu::EXPERT_ACT_SWIGLU, {37, 0, 300, 129, 1, 64, 250, 18}, 200, 72, 6000);
}
TEST(CudaExpertFfn, Relu2Uneven) {
  PX_SKIP_IF_NO_GPU();
  ffn_case(px::cpu::EXPERT_ACT_RELU2, {5, 140, 0, 256, 77}, 136, 264, 6100);
}
TEST(CudaExpertFfn, SwigluLarger) {
  PX_SKIP_IF_NO_GPU();
  ffn_case(px::cpu::EXPERT_ACT_SWIGLU, {512, 300, 700, 0, 1000, 64}, 256, 384, 6200);
}

// Tile-aligned layout from the GPU permute: padding rows are zero, results on the real
// rows match the unaligned CPU computation.
TEST(CudaExpertFfn, AlignedSegmentsFromPermute) {
  PX_SKIP_IF_NO_GPU();
  const int N = 400, E = 8, k = 2, d = 128, h = 64, align = 128;
  std::mt19937_64 g(6300);
  std::vector<int32_t> idx((size_t)N * k);
  for (int n = 0; n < N; ++n) {
    int a = g() % E, b = (a + 1 + g() % (E - 1)) % E;
    idx[(size_t)n * k] = a; idx[(size_t)n * k + 1] = b;
  }
  std::vector<int32_t> b(E + 1), p((size_t)N * k), r((size_t)N * k);
  px::cpu::moe_permute_build(b.data(), p.data(), r.data(), idx.data(), N, E, k);
  auto X = round_bf16(randn((size_t)N * d, 6301));
  auto W1 = round_bf16(randn((size_t)E * d * h, 6302, 0.08f));
  auto W3 = round_bf16(randn((size_t)E * d * h, 6303, 0.08f));
  auto W2 = round_bf16(randn((size_t)E * h * d, 6304, 0.08f));
  int rows = N * k;
  std::vector<float> Xp((size_t)rows * d);
  px::cpu::gather_rows<float>(Xp.data(), X.data(), r.data(), rows, d);
  std::vector<float> Y((size_t)rows * d), A((size_t)rows * h), Bm((size_t)rows * h), act((size_t)rows * h);
  px::cpu::expert_ffn_forward<float>(Y.data(), A.data(), Bm.data(), act.data(), Xp.data(), W1.data(),
                                     W3.data(), W2.data(), b.data(), E, d, h, px::cpu::EXPERT_ACT_SWIGLU);
  std::vector<float> out((size_t)N * d, 0.f), gates((size_t)N * k, 0.5f);
  px::cpu::combine_rows<float>(out.data(), Y.data(), gates.data(), p.data(), N, k, d);

  long cap = px::cuda::moe_permuted_capacity(N, E, k, align);
  DBuf<int32_t> gidx(idx), gb(E + 1), gp((size_t)N * k), gr(cap);
  DBuf<char> scratch(px::cuda::moe_permute_scratch_bytes(N, E, k));
  px::cuda::moe_permute_build(gb.p, gp.p, gr.p, gidx.p, N, E, k, align, scratch.p);
  DBuf<bf16> gX(to_bf16(X)), gXp(cap * d), gW1(to_bf16(W1)), gW3(to_bf16(W3)), gW2(to_bf16(W2));
  DBuf<bf16> gY(cap * d), gA(cap * h), gB(cap * h), gact(cap * h);
  gXp.poison(); gY.poison();
  px::cuda::gather_rows<bf16>(gXp.p, gX.p, gr.p, (int)cap, d);
  px::cuda::expert_ffn_forward(gY.p, gA.p, gB.p, gact.p, gXp.p, gW1.p, gW3.p, gW2.p, gb.p,
                               (int)cap, E, d, h, px::cpu::EXPERT_ACT_SWIGLU);
  DBuf<float> gout((size_t)N * d), gg(gates);
  cudaCheck(cudaMemset(gout.p, 0, gout.n * sizeof(float)));
  px::cuda::combine_rows<float, bf16>(gout.p, gY.p, gg.p, gp.p, N, k, d);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gout.download(), out), kTolBF16);
  auto hb = gb.download();
  auto hY = to_f32(gY.download());
  auto hr = gr.download();
  for (int i = 0; i < hb[E]; ++i)
    if (hr[i] < 0)
      for (int c = 0; c < d; ++c) ASSERT_EQ(hY[(size_t)i * d + c], 0.f) << "padding row " << i;
}

// Very uneven segments: empty experts (first, middle, last), a 1-row expert, segments that are
// not a multiple of the 128-row tile, d and h not multiples of the 64-wide K tile or of the
// 128/256-wide column tiles, and K long enough to cycle every pipeline stage.
TEST(CudaExpertFfn, SwigluVeryUneven) {
  PX_SKIP_IF_NO_GPU();
  ffn_case(px::cpu::EXPERT_ACT_SWIGLU, {0, 1, 300, 0, 517, 129, 2, 0}, 584, 328, 6400);
}
TEST(CudaExpertFfn, Relu2VeryUneven) {
  PX_SKIP_IF_NO_GPU();
  ffn_case(px::cpu::EXPERT_ACT_RELU2, {1, 0, 383, 127, 0, 600}, 328, 584, 6500);
}
