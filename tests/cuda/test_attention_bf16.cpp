// Tensor-core flash attention (bf16 in, fp32 accumulate) vs px::cpu::attention_forward/backward
// on the same bf16-rounded inputs (fp32 CPU math). bf16 tolerance on the normalised error.
#include "test_util.hpp"

#include <type_traits>

#include "attention_bf16.cuh"   // defines: px::cuda::attention_forward_bf16/backward_bf16
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu::attention_* (reference)

using namespace px::test;

namespace {
template <class G>
std::vector<float> as_f32(const DBuf<G>& b) {
  if constexpr (std::is_same_v<G, float>) return b.download();
  else return to_f32(b.download());
}

template <class G>
void attn_bf16_case(int B, int Tn, int H, int hd, uint64_t seed, double tol = kTolBF16) {
  SCOPED_TRACE(testing::Message() << "B=" << B << " T=" << Tn << " H=" << H << " hd=" << hd);
  const size_t n = (size_t)B * Tn * H * hd, nl = (size_t)B * H * Tn;
  auto q = round_bf16(randn(n, seed)), k = round_bf16(randn(n, seed + 1)),
       v = round_bf16(randn(n, seed + 2)), dout = round_bf16(randn(n, seed + 3));
  std::vector<float> out(n), probs((size_t)B * H * Tn * Tn), dq(n), dk(n), dv(n);
  px::cpu::attention_forward<float>(out.data(), probs.data(), q.data(), k.data(), v.data(), B, Tn,
                                    H, hd);
  // reference lse in double
  std::vector<float> lse(nl);
  const double scale = 1.0 / std::sqrt((double)hd);
  const size_t ld = (size_t)H * hd;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Tn; ++i) {
        std::vector<double> s(i + 1);
        double mx = -INFINITY;
        for (int j = 0; j <= i; ++j) {
          double a = 0;
          for (int d = 0; d < hd; ++d)
            a += (double)q[(b * Tn + i) * ld + h * hd + d] * k[(b * Tn + j) * ld + h * hd + d];
          s[j] = a * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double x : s) sum += std::exp(x - mx);
        lse[((size_t)b * H + h) * Tn + i] = (float)(mx + std::log(sum));
      }
  DBuf<bf16> gq(to_bf16(q)), gk(to_bf16(k)), gv(to_bf16(v)), gdo(to_bf16(dout)), gout(n);
  DBuf<float> glse(nl), scratch(nl);
  gout.poison();
  glse.poison();
  px::cuda::attention_forward_bf16(gout.p, glse.p, gq.p, gk.p, gv.p, B, Tn, H, hd);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gout.download(), out), tol);
  EXPECT_LT(rel_err(glse.download(), lse), 1e-4);
  px::cpu::attention_backward<float>(dq.data(), dk.data(), dv.data(), dout.data(), q.data(),
                                     k.data(), v.data(), probs.data(), B, Tn, H, hd);
  DBuf<G> gdq(n), gdk(n), gdv(n);
  std::vector<float> first[3];
  for (int rep = 0; rep < 2; ++rep) {
    gdq.poison();
    gdk.poison();
    gdv.poison();
    scratch.poison();
    px::cuda::attention_backward_bf16<G>(gdq.p, gdk.p, gdv.p, gdo.p, gout.p, gq.p, gk.p, gv.p,
                                         glse.p, B, Tn, H, hd, scratch.p);
    cudaCheck(cudaGetLastError());
    std::vector<float> got[3] = {as_f32(gdq), as_f32(gdk), as_f32(gdv)};
    if (rep == 0) {
      EXPECT_LT(rel_err(got[0], dq), tol) << "dq";
      EXPECT_LT(rel_err(got[1], dk), tol) << "dk";
      EXPECT_LT(rel_err(got[2], dv), tol) << "dv";
      for (int i = 0; i < 3; ++i) first[i] = got[i];
    } else {  // no atomics: bit-identical repeat
      for (int i = 0; i < 3; ++i)
        EXPECT_EQ(0, std::memcmp(first[i].data(), got[i].data(), n * sizeof(float))) << i;
    }
  }
}
}  // namespace

TEST(CudaAttentionBf16, Hd64) {
  PX_SKIP_IF_NO_GPU();
  attn_bf16_case<float>(2, 77, 3, 64, 19500);
  attn_bf16_case<float>(1, 200, 2, 64, 19510);
  attn_bf16_case<float>(3, 64, 2, 64, 19520);
  attn_bf16_case<float>(1, 1, 2, 64, 19530);
}
TEST(CudaAttentionBf16, Hd32) {
  PX_SKIP_IF_NO_GPU();
  attn_bf16_case<float>(2, 45, 4, 32, 19600);
  attn_bf16_case<float>(1, 129, 1, 32, 19610);
}
TEST(CudaAttentionBf16, Hd128) {
  PX_SKIP_IF_NO_GPU();
  attn_bf16_case<float>(1, 130, 2, 128, 19700);
  attn_bf16_case<float>(2, 256, 1, 128, 19710);
}
TEST(CudaAttentionBf16, Bf16Gradients) {
  PX_SKIP_IF_NO_GPU();
  attn_bf16_case<bf16>(2, 300, 2, 64, 19800);
  attn_bf16_case<bf16>(1, 100, 2, 128, 19810);
}
