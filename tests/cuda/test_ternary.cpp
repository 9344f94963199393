// Ternary pack / unpack / ternary x bf16 matmul vs the CPU ternary ops (px::cpu::ternary_*,
// src/ops/cpu/ternary.cpp: the same layout, rules and fp32 arithmetic order, so scales and
// codes must agree bit for bit).
#include <bit>
#include <cstdio>
#include <cstring>

#include "test_util.hpp"

#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu::ternary_pack/unpack/matmul, px::cpu::matmul
#include "ternary.cuh"          // defines: px::cuda::ternary_pack/unpack/matmul

using namespace px::test;

TEST(CudaTernary, PackUnpackMatmul) {
  PX_SKIP_IF_NO_GPU();
  const int in = 272, out = 200, M = 77;
  auto W = randn((size_t)in * out, 9000, 0.02f);
  // unit 3 all zero (s = 0 -> codes 0); unit 7 with exact ties: 17 copies of a 16-value pattern
  // with sum |w| = 32, so s = 2 exactly and |w|/s hits 0.5 (-> 0, ties to even) and 1.5 (-> 1)
  const float tie[16] = {1, -1, 3, -3, 4, -4, 0.75f, 1.25f, 2, -2, 0, 0, 5, -5, 0, 0};
  for (int i = 0; i < in; ++i) {
    W[(size_t)i * out + 3] = 0.f;
    W[(size_t)i * out + 7] = tie[i % 16];
  }
  // CPU ops: the reference
  std::vector<float> s(out);
  std::vector<uint32_t> p((size_t)out * in / 16);
  px::cpu::ternary_pack(p.data(), s.data(), W.data(), in, out);
  ASSERT_EQ(s[3], 0.f);
  ASSERT_EQ(s[7], 2.f);
  std::vector<float> Wq((size_t)in * out);
  px::cpu::ternary_unpack<float>(Wq.data(), p.data(), s.data(), in, out);

  DBuf<float> gW(W), gs(out), gWq((size_t)in * out);
  DBuf<uint32_t> gp((size_t)out * in / 16);
  DBuf<bf16> gWb((size_t)in * out);
  gs.poison(); gp.poison(); gWq.poison(); gWb.poison();
  px::cuda::ternary_pack(gp.p, gs.p, gW.p, in, out);
  px::cuda::ternary_unpack<float>(gWq.p, gp.p, gs.p, in, out);
  px::cuda::ternary_unpack<bf16>(gWb.p, gp.p, gs.p, in, out);
  cudaCheck(cudaGetLastError());

  // scales and codes: bit-identical (fp32 sums in ascending i, IEEE division, rintf)
  auto hs = gs.download();
  size_t scale_diff = 0;
  for (int j = 0; j < out; ++j)
    scale_diff += std::bit_cast<uint32_t>(hs[j]) != std::bit_cast<uint32_t>(s[j]);
  EXPECT_EQ(scale_diff, 0u) << "scales differ from px::cpu::ternary_pack";
  auto hp = gp.download();
  size_t word_diff = 0;
  for (size_t k = 0; k < hp.size(); ++k) word_diff += hp[k] != p[k];
  EXPECT_EQ(word_diff, 0u) << "codes differ from px::cpu::ternary_pack";
  // 2 bits per weight
  EXPECT_EQ(gp.n * sizeof(uint32_t) * 8, (size_t)in * out * 2);
  // unpack: fp32 exactly the CPU's; bf16 the CPU's rounded to bf16
  auto hWq = gWq.download();
  EXPECT_EQ(std::memcmp(hWq.data(), Wq.data(), Wq.size() * sizeof(float)), 0) << "fp32 unpack";
  auto hWb = to_f32(gWb.download());
  EXPECT_EQ(hWb, round_bf16(Wq)) << "bf16 unpack";

  // matmul against the CPU ternary_matmul (same order: ascending i, add/subtract, one fma at
  // the end) and against the dense CPU matmul with the dequantized weights
  auto X = round_bf16(randn((size_t)M * in, 9001));
  auto Y0 = randn((size_t)M * out, 9002);
  for (int acc = 0; acc < 2; ++acc) {
    std::vector<float> ref = Y0, dense = Y0;
    px::cpu::ternary_matmul(ref.data(), X.data(), p.data(), s.data(), M, in, out, acc);
    px::cpu::matmul<float>(dense.data(), X.data(), Wq.data(), M, in, out, false, false, acc);
    DBuf<bf16> gX(to_bf16(X));
    DBuf<float> gY(Y0);
    if (!acc) gY.poison();
    px::cuda::ternary_matmul(gY.p, gX.p, gp.p, gs.p, M, in, out, acc);
    cudaCheck(cudaGetLastError());
    auto hY = gY.download();
    size_t exact = 0;
    for (size_t e = 0; e < hY.size(); ++e) exact += std::bit_cast<uint32_t>(hY[e]) == std::bit_cast<uint32_t>(ref[e]);
    // bit-exact when nvcc contracts `Y + sum * s` into an fma as the CPU twin assumes; at most
    // an ulp apart otherwise, hence the tolerance (the count is printed to see which)
    std::printf("ternary_matmul accumulate=%d: %zu of %zu outputs bit-identical to the CPU\n", acc, exact,
                hY.size());
    EXPECT_LT(rel_err(hY, ref), 1e-6) << "vs px::cpu::ternary_matmul, accumulate=" << acc;
    EXPECT_LT(rel_err(hY, dense), kTolF32) << "vs px::cpu::matmul, accumulate=" << acc;
  }
}
