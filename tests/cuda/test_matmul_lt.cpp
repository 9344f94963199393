// cuBLASLt dense GEMM vs px::cpu::matmul, all transposes, fp32 and bf16.
#include "test_util.hpp"

#include "matmul_lt.cuh"      // defines: px::cuda::matmul
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu::matmul (reference)

using namespace px::test;

namespace {

struct Shape { int M, K, N; };

void run_case(Shape s, bool tA, bool tB, bool acc, bool use_bf16, bool bf16_out, uint64_t seed) {
  auto A = randn((size_t)s.M * s.K, seed);
  auto B = randn((size_t)s.K * s.N, seed + 1);
  auto C0 = randn((size_t)s.M * s.N, seed + 2);
  if (use_bf16) { A = round_bf16(A); B = round_bf16(B); }
  if (bf16_out) C0 = round_bf16(C0);
  std::vector<float> ref = C0;
  px::cpu::matmul<float>(ref.data(), A.data(), B.data(), s.M, s.K, s.N, tA, tB, acc);
  double err;
  if (!use_bf16) {
    DBuf<float> dA(A), dB(B), dC(C0.size());
    if (acc) dC.upload(C0); else dC.poison();
    px::cuda::matmul(dC.p, dA.p, dB.p, s.M, s.K, s.N, tA, tB, acc);
    cudaCheck(cudaGetLastError());
    err = rel_err(dC.download(), ref);
    EXPECT_LT(err, kTolF32) << s.M << "x" << s.K << "x" << s.N << " tA=" << tA << " tB=" << tB;
  } else if (!bf16_out) {
    DBuf<bf16> dA(to_bf16(A)), dB(to_bf16(B));
    DBuf<float> dC(C0.size());
    if (acc) dC.upload(C0); else dC.poison();
    px::cuda::matmul(dC.p, dA.p, dB.p, s.M, s.K, s.N, tA, tB, acc);
    cudaCheck(cudaGetLastError());
    err = rel_err(dC.download(), ref);
    EXPECT_LT(err, 1e-4) << s.M << "x" << s.K << "x" << s.N << " tA=" << tA << " tB=" << tB;
  } else {
    DBuf<bf16> dA(to_bf16(A)), dB(to_bf16(B)), dC(C0.size());
    if (acc) dC.upload(to_bf16(C0)); else dC.poison();
    px::cuda::matmul(dC.p, dA.p, dB.p, s.M, s.K, s.N, tA, tB, acc);
    cudaCheck(cudaGetLastError());
    err = rel_err(dC.download(), ref);
    EXPECT_LT(err, kTolBF16) << s.M << "x" << s.K << "x" << s.N << " tA=" << tA << " tB=" << tB;
  }
}

}  // namespace

TEST(CudaMatmulLt, F32AllTransposes) {
  PX_SKIP_IF_NO_GPU();
  uint64_t seed = 1000;
  for (Shape s : {Shape{64, 32, 48}, Shape{257, 129, 65}, Shape{1, 300, 7}})
    for (int t = 0; t < 4; ++t)
      for (int acc = 0; acc < 2; ++acc) run_case(s, t & 1, t & 2, acc, false, false, seed += 7);
}

TEST(CudaMatmulLt, Bf16InF32Out) {
  PX_SKIP_IF_NO_GPU();
  uint64_t seed = 2000;
  for (Shape s : {Shape{128, 64, 96}, Shape{200, 136, 72}})
    for (int t = 0; t < 4; ++t)
      for (int acc = 0; acc < 2; ++acc) run_case(s, t & 1, t & 2, acc, true, false, seed += 7);
}

TEST(CudaMatmulLt, Bf16InBf16Out) {
  PX_SKIP_IF_NO_GPU();
  uint64_t seed = 3000;
  for (Shape s : {Shape{128, 64, 96}, Shape{96, 256, 40}})
    for (int t = 0; t < 4; ++t)
      for (int acc = 0; acc < 2; ++acc) run_case(s, t & 1, t & 2, acc, true, true, seed += 7);
}

TEST(CudaMatmulLt, AlgorithmIsCached) {
  PX_SKIP_IF_NO_GPU();
  auto A = randn(64 * 64, 4001), B = randn(64 * 64, 4002);
  DBuf<float> dA(A), dB(B), dC(64 * 64);
  px::cuda::matmul(dC.p, dA.p, dB.p, 64, 64, 64, false, false, false);
  size_t n = px::cuda::matmul_lt_cache_size();
  for (int i = 0; i < 3; ++i) px::cuda::matmul(dC.p, dA.p, dB.p, 64, 64, 64, false, false, false);
  EXPECT_EQ(px::cuda::matmul_lt_cache_size(), n);
  px::cuda::matmul(dC.p, dA.p, dB.p, 64, 64, 64, true, false, false);
  EXPECT_EQ(px::cuda::matmul_lt_cache_size(), n + 1);
}
