// Flash-style causal attention vs px::cpu::attention_forward/backward (fp32).
#include "test_util.hpp"

#include "attention.cuh"        // defines: px::cuda::attention_forward/backward
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu::attention_* (reference)

using namespace px::test;

namespace {
void attn_case(int B, int Tn, int H, int hd, bool bwd, uint64_t seed) {
  size_t n = (size_t)B * Tn * H * hd;
  auto q = randn(n, seed), k = randn(n, seed + 1), v = randn(n, seed + 2), dout = randn(n, seed + 3);
  std::vector<float> out(n), probs((size_t)B * H * Tn * Tn), dq(n), dk(n), dv(n);
  px::cpu::attention_forward<float>(out.data(), probs.data(), q.data(), k.data(), v.data(), B, Tn, H, hd);
  DBuf<float> gq(q), gk(k), gv(v), gout(n), glse((size_t)B * H * Tn);
  gout.poison(); glse.poison();
  px::cuda::attention_forward(gout.p, glse.p, gq.p, gk.p, gv.p, B, Tn, H, hd);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gout.download(), out), kTolF32) << "T=" << Tn << " hd=" << hd;
  if (!bwd) return;
  px::cpu::attention_backward<float>(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                                     v.data(), probs.data(), B, Tn, H, hd);
  DBuf<float> gdo(dout), gdq(n), gdk(n), gdv(n), scratch((size_t)B * H * Tn);
  gdq.poison(); gdk.poison(); gdv.poison();
  px::cuda::attention_backward(gdq.p, gdk.p, gdv.p, gdo.p, gout.p, gq.p, gk.p, gv.p, glse.p, B, Tn,
                               H, hd, scratch.p);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gdq.download(), dq), 1e-4) << "T=" << Tn << " hd=" << hd;
  EXPECT_LT(rel_err(gdk.download(), dk), 1e-4);
  EXPECT_LT(rel_err(gdv.download(), dv), 1e-4);
}
}  // namespace

TEST(CudaAttention, ForwardBackwardHd64) {
  PX_SKIP_IF_NO_GPU();
  attn_case(2, 77, 3, 64, true, 9500);
  attn_case(1, 200, 2, 64, true, 9510);
}
TEST(CudaAttention, ForwardBackwardHd32) {
  PX_SKIP_IF_NO_GPU();
  attn_case(2, 45, 4, 32, true, 9600);
}
TEST(CudaAttention, ForwardHd128) {
  PX_SKIP_IF_NO_GPU();
  attn_case(1, 130, 2, 128, false, 9700);
}
