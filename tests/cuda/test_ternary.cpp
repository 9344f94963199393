// Ternary pack / unpack / ternary x bf16 matmul vs a CPU reference.
#include "test_util.hpp"

#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu::matmul (reference)
#include "ternary.cuh"          // defines: px::cuda::ternary_pack/unpack/matmul

using namespace px::test;

TEST(CudaTernary, PackUnpackMatmul) {
  PX_SKIP_IF_NO_GPU();
  const int in = 272, out = 200, M = 77;
  auto W = randn((size_t)in * out, 9000, 0.02f);
  // CPU reference quantization
  std::vector<float> s(out, 0.f), Wq((size_t)in * out);
  for (int j = 0; j < out; ++j) {
    double a = 0;
    for (int i = 0; i < in; ++i) a += std::fabs(W[(size_t)i * out + j]);
    s[j] = (float)(a / in);
  }
  for (int i = 0; i < in; ++i)
    for (int j = 0; j < out; ++j) {
      float r = std::fmin(1.f, std::fmax(-1.f, std::rint(W[(size_t)i * out + j] / s[j])));
      Wq[(size_t)i * out + j] = r * s[j];
    }
  DBuf<float> gW(W), gs(out), gWq((size_t)in * out);
  DBuf<uint32_t> gp((size_t)out * in / 16);
  gs.poison(); gp.poison(); gWq.poison();
  px::cuda::ternary_pack(gp.p, gs.p, gW.p, in, out);
  px::cuda::ternary_unpack<float>(gWq.p, gp.p, gs.p, in, out);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gs.download(), s), 1e-6);
  auto hWq = gWq.download();
  size_t flips = 0;
  for (size_t e = 0; e < hWq.size(); ++e) flips += std::fabs(hWq[e] - Wq[e]) > 1e-3f * s[e % out];
  EXPECT_LE(flips, hWq.size() / 10000) << "codes differ from the CPU reference";
  // 2 bits per weight
  EXPECT_EQ(gp.n * sizeof(uint32_t) * 8, (size_t)in * out * 2);
  // matmul against the CPU matmul with the GPU's own dequantized weights
  auto X = round_bf16(randn((size_t)M * in, 9001));
  auto Y0 = randn((size_t)M * out, 9002);
  for (int acc = 0; acc < 2; ++acc) {
    std::vector<float> ref = Y0;
    px::cpu::matmul<float>(ref.data(), X.data(), hWq.data(), M, in, out, false, false, acc);
    DBuf<bf16> gX(to_bf16(X));
    DBuf<float> gY(Y0);
    if (!acc) gY.poison();
    px::cuda::ternary_matmul(gY.p, gX.p, gp.p, gs.p, M, in, out, acc);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(gY.download(), ref), kTolF32) << "accumulate=" << acc;
  }
}
