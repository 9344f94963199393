// MoE permutation (build, gather, combine, backward, scatter-add) vs the CPU backend.
#include "test_util.hpp"

#include <algorithm>
#include <numeric>

#include "moe_permute.cuh"      // defines: px::cuda::moe_permute_build, gather_rows, ...
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu reference ops

using namespace px::test;

namespace {

// Random top-k without repeats per token, skewed so some experts get many tokens, some none.
std::vector<int32_t> random_topk(int N, int E, int k, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<int32_t> idx((size_t)N * k);
  std::vector<double> w(E);
  for (int e = 0; e < E; ++e) w[e] = (e % 5 == 4) ? 0.0 : 1.0 + (e % 7);
  for (int n = 0; n < N; ++n) {
    std::vector<double> ww = w;
    for (int j = 0; j < k; ++j) {
      std::discrete_distribution<int> d(ww.begin(), ww.end());
      int e = d(g);
      idx[(size_t)n * k + j] = e;
      ww[e] = 0;
    }
  }
  return idx;
}

struct Perm {
  std::vector<int32_t> bounds, pos, row_token;
};

Perm gpu_build(const std::vector<int32_t>& idx, int N, int E, int k, int align) {
  long cap = px::cuda::moe_permuted_capacity(N, E, k, align);
  DBuf<int32_t> dI(idx), dB(E + 1), dP((size_t)N * k), dR(cap);
  DBuf<char> scratch(px::cuda::moe_permute_scratch_bytes(N, E, k));
  dB.poison(); dP.poison(); dR.poison();
  px::cuda::moe_permute_build(dB.p, dP.p, dR.p, dI.p, N, E, k, align, scratch.p);
  cudaCheck(cudaGetLastError());
  return {dB.download(), dP.download(), dR.download()};
}

}  // namespace

TEST(CudaMoePermute, BuildMatchesCpu) {
  PX_SKIP_IF_NO_GPU();
  int cases[][3] = {{1000, 16, 2}, {4099, 64, 8}, {7, 8, 3}, {3000, 128, 6}};
  uint64_t seed = 5000;
  for (auto& c : cases) {
    int N = c[0], E = c[1], k = c[2];
    auto idx = random_topk(N, E, k, ++seed);
    std::vector<int32_t> b(E + 1), p((size_t)N * k), r((size_t)N * k);
    px::cpu::moe_permute_build(b.data(), p.data(), r.data(), idx.data(), N, E, k);
    Perm g = gpu_build(idx, N, E, k, 1);
    EXPECT_EQ(g.bounds, b) << N << " " << E << " " << k;
    EXPECT_EQ(g.pos, p);
    EXPECT_EQ(g.row_token, r);
  }
}

TEST(CudaMoePermute, AlignedBuild) {
  PX_SKIP_IF_NO_GPU();
  int N = 2500, E = 32, k = 4;
  for (int align : {64, 128}) {
    auto idx = random_topk(N, E, k, 5100 + align);
    std::vector<int32_t> b(E + 1), p((size_t)N * k), r((size_t)N * k);
    px::cpu::moe_permute_build(b.data(), p.data(), r.data(), idx.data(), N, E, k);
    Perm g = gpu_build(idx, N, E, k, align);
    for (int e = 0; e < E; ++e) {
      int cnt = b[e + 1] - b[e];
      ASSERT_EQ(g.bounds[e] % align, 0);
      ASSERT_EQ(g.bounds[e + 1] - g.bounds[e], (cnt + align - 1) / align * align);
      for (int i = 0; i < cnt; ++i) ASSERT_EQ(g.row_token[g.bounds[e] + i], r[b[e] + i]);
      for (int i = g.bounds[e] + cnt; i < g.bounds[e + 1]; ++i) ASSERT_EQ(g.row_token[i], -1);
    }
    for (int a = 0; a < N * k; ++a) {
      int e = idx[a];
      ASSERT_EQ(g.pos[a] - g.bounds[e], p[a] - b[e]);
    }
  }
}

template <class T>
void gather_combine_case(uint64_t seed, double tol) {
  int N = 777, E = 24, k = 3, d = 200;
  auto idx = random_topk(N, E, k, seed);
  std::vector<int32_t> b(E + 1), p((size_t)N * k), r((size_t)N * k);
  px::cpu::moe_permute_build(b.data(), p.data(), r.data(), idx.data(), N, E, k);
  int rows = N * k;
  auto X = randn((size_t)N * d, seed + 1), Yp = randn((size_t)rows * d, seed + 2);
  auto gates = randu((size_t)N * k, seed + 3, 0.05f, 1.f);
  auto out0 = randn((size_t)N * d, seed + 4), dout = randn((size_t)N * d, seed + 5);
  constexpr bool B16 = std::is_same_v<T, bf16>;
  if (B16) { X = round_bf16(X); Yp = round_bf16(Yp); out0 = round_bf16(out0); dout = round_bf16(dout); }
  auto up = [&](const std::vector<float>& v) {
    if constexpr (B16) return to_bf16(v); else return v;
  };
  DBuf<int32_t> dpos(p), drt(r);
  DBuf<T> dX(up(X)), dXp((size_t)rows * d), dYp(up(Yp)), dout_d(up(dout)), dO(up(out0));
  DBuf<T> ddYp((size_t)rows * d), ddX(up(out0));
  DBuf<float> dg(gates), ddg((size_t)N * k);
  // gather
  std::vector<float> ref_Xp((size_t)rows * d);
  px::cpu::gather_rows<float>(ref_Xp.data(), X.data(), r.data(), rows, d);
  dXp.poison();
  px::cuda::gather_rows<T>(dXp.p, dX.p, drt.p, rows, d);
  EXPECT_EQ(rel_err(dXp.download(), ref_Xp), 0.0);
  // combine (accumulating into out)
  std::vector<float> ref_out = out0;
  px::cpu::combine_rows<float>(ref_out.data(), Yp.data(), gates.data(), p.data(), N, k, d);
  px::cuda::combine_rows<T, T>(dO.p, dYp.p, dg.p, dpos.p, N, k, d);
  EXPECT_LT(rel_err(dO.download(), ref_out), tol);
  // combine backward
  std::vector<float> ref_dYp((size_t)rows * d), ref_dg((size_t)N * k);
  px::cpu::combine_rows_backward<float>(ref_dYp.data(), ref_dg.data(), dout.data(), Yp.data(),
                                        gates.data(), p.data(), N, k, d);
  ddYp.poison(); ddg.poison();
  px::cuda::combine_rows_backward<T, T>(ddYp.p, ddg.p, dout_d.p, dYp.p, dg.p, dpos.p, N, k, d);
  EXPECT_LT(rel_err(ddYp.download(), ref_dYp), tol);
  EXPECT_LT(rel_err(ddg.download(), ref_dg), B16 ? 1e-4 : 1e-5);
  // scatter-add
  std::vector<float> ref_dX = out0;
  px::cpu::scatter_add_rows<float>(ref_dX.data(), Yp.data(), r.data(), rows, d);
  px::cuda::scatter_add_rows<T, T>(ddX.p, dYp.p, dpos.p, N, k, d);
  EXPECT_LT(rel_err(ddX.download(), ref_dX), tol);
}

TEST(CudaMoePermute, GatherCombineF32) {
  PX_SKIP_IF_NO_GPU();
  gather_combine_case<float>(5300, kTolF32);
}
TEST(CudaMoePermute, GatherCombineBf16) {
  PX_SKIP_IF_NO_GPU();
  gather_combine_case<bf16>(5400, kTolBF16);
}

// The model's path at a realistic width: permute_rows (scatter by token) == gather_rows,
// combine_rows_add (residual + shared output + gated routed rows, one pass), the vectorised
// backward / scatter-add, and k > 8 (the 32-wide unrolled variant).
TEST(CudaMoePermute, PermuteAndFusedCombine) {
  PX_SKIP_IF_NO_GPU();
  struct C { int N, E, k, d; };
  uint64_t seed = 5600;
  for (C c : {C{611, 64, 8, 2048}, C{300, 40, 12, 136}}) {
    const int N = c.N, E = c.E, k = c.k, d = c.d, rows = N * k;
    auto idx = random_topk(N, E, k, ++seed);
    std::vector<int32_t> b(E + 1), p((size_t)rows), r((size_t)rows);
    px::cpu::moe_permute_build(b.data(), p.data(), r.data(), idx.data(), N, E, k);
    auto X = round_bf16(randn((size_t)N * d, ++seed)), Yp = round_bf16(randn((size_t)rows * d, ++seed));
    auto A = randn((size_t)N * d, ++seed), Bs = round_bf16(randn((size_t)N * d, ++seed));
    auto gates = randu((size_t)rows, ++seed, 0.05f, 1.f), dout = randn((size_t)N * d, ++seed);
    DBuf<int32_t> dpos(p), drt(r);
    DBuf<bf16> dX(to_bf16(X)), dXp((size_t)rows * d), dXp2((size_t)rows * d), dY(to_bf16(Yp)),
        ddYp((size_t)rows * d), dB(to_bf16(Bs));
    DBuf<float> dA(A), dO((size_t)N * d), dg(gates), ddg((size_t)rows), ddo(dout), dS(A);
    // permute == gather
    std::vector<float> ref_Xp((size_t)rows * d);
    px::cpu::gather_rows<float>(ref_Xp.data(), X.data(), r.data(), rows, d);
    dXp.poison(); dXp2.poison();
    px::cuda::permute_rows<bf16>(dXp.p, dX.p, dpos.p, N, k, d);
    px::cuda::gather_rows<bf16>(dXp2.p, dX.p, drt.p, rows, d);
    cudaCheck(cudaGetLastError());
    EXPECT_EQ(rel_err(dXp.download(), ref_Xp), 0.0);
    EXPECT_EQ(rel_err(dXp2.download(), ref_Xp), 0.0);
    // fused combine: out = A + B + sum_j g Yp
    std::vector<float> ref = A;
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += Bs[i];
    px::cpu::combine_rows<float>(ref.data(), Yp.data(), gates.data(), p.data(), N, k, d);
    dO.poison();
    px::cuda::combine_rows_add(dO.p, dA.p, dB.p, dY.p, dg.p, dpos.p, N, k, d);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(dO.download(), ref), kTolF32);
    // in place, no b: out = out + sum
    std::vector<float> ref2 = A;
    px::cpu::combine_rows<float>(ref2.data(), Yp.data(), gates.data(), p.data(), N, k, d);
    px::cuda::combine_rows_add(dA.p, dA.p, nullptr, dY.p, dg.p, dpos.p, N, k, d);
    EXPECT_LT(rel_err(dA.download(), ref2), kTolF32);
    // backward (fp32 dout, bf16 Yp / dYp as in the model)
    std::vector<float> ref_dYp((size_t)rows * d), ref_dg((size_t)rows);
    px::cpu::combine_rows_backward<float>(ref_dYp.data(), ref_dg.data(), dout.data(), Yp.data(),
                                          gates.data(), p.data(), N, k, d);
    ddYp.poison(); ddg.poison();
    px::cuda::combine_rows_backward<float, bf16>(ddYp.p, ddg.p, ddo.p, dY.p, dg.p, dpos.p, N, k, d);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(ddYp.download(), ref_dYp), kTolBF16);
    EXPECT_LT(rel_err(ddg.download(), ref_dg), 1e-5);
    // scatter-add into fp32
    std::vector<float> ref_dX = A;
    px::cpu::scatter_add_rows<float>(ref_dX.data(), Yp.data(), r.data(), rows, d);
    px::cuda::scatter_add_rows<float, bf16>(dS.p, dY.p, dpos.p, N, k, d);
    EXPECT_LT(rel_err(dS.download(), ref_dX), kTolF32);
  }
}
