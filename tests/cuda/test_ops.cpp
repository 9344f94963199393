// RMSNorm, RoPE, router, cross-entropy and AdamW kernels vs the CPU backend.
#include "test_util.hpp"

#include "adamw.cuh"            // defines: px::cuda::adamw_update
#include "cross_entropy.cuh"    // defines: px::cuda::cross_entropy
#include "elementwise.cuh"      // defines: px::cuda::rmsnorm_forward_cast
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu reference ops
#include "rmsnorm.cuh"          // defines: px::cuda::rmsnorm_forward/backward
#include "rope.cuh"             // defines: px::cuda::rope_forward/backward/forward2/backward2
#include "router.cuh"           // defines: px::cuda::router_forward/stats/backward

using namespace px::test;

TEST(CudaOps, RmsnormF32) {
  PX_SKIP_IF_NO_GPU();
  int N = 257, d = 384;
  auto x = randn((size_t)N * d, 7000), g = randn(d, 7001), dout = randn((size_t)N * d, 7002);
  auto dg0 = randn(d, 7003);
  std::vector<float> out((size_t)N * d), rstd(N), dx((size_t)N * d), dg = dg0;
  px::cpu::rmsnorm_forward<float>(out.data(), rstd.data(), x.data(), g.data(), N, d);
  px::cpu::rmsnorm_backward<float>(dx.data(), dg.data(), dout.data(), x.data(), g.data(),
                                   rstd.data(), N, d);
  DBuf<float> gx(x), gg(g), gout((size_t)N * d), gr(N), gdo(dout), gdx((size_t)N * d), gdg(dg0);
  gout.poison(); gr.poison(); gdx.poison();
  px::cuda::rmsnorm_forward<float>(gout.p, gr.p, gx.p, gg.p, N, d);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gout.download(), out), kTolF32);
  EXPECT_LT(rel_err(gr.download(), rstd), kTolF32);
  px::cuda::rmsnorm_backward<float>(gdx.p, gdg.p, gdo.p, gx.p, gg.p, gr.p, N, d);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gdx.download(), dx), kTolF32);
  EXPECT_LT(rel_err(gdg.download(), dg), kTolF32);
}

TEST(CudaOps, RmsnormBf16) {
  PX_SKIP_IF_NO_GPU();
  int N = 100, d = 1024;
  auto x = round_bf16(randn((size_t)N * d, 7100)), g = randn(d, 7101);
  auto dout = round_bf16(randn((size_t)N * d, 7102));
  std::vector<float> out((size_t)N * d), rstd(N), dx((size_t)N * d), dg(d, 0.f);
  px::cpu::rmsnorm_forward<float>(out.data(), rstd.data(), x.data(), g.data(), N, d);
  px::cpu::rmsnorm_backward<float>(dx.data(), dg.data(), dout.data(), x.data(), g.data(),
                                   rstd.data(), N, d);
  DBuf<bf16> gx(to_bf16(x)), gout((size_t)N * d), gdo(to_bf16(dout)), gdx((size_t)N * d);
  DBuf<float> gg(g), gr(N), gdg(std::vector<float>(d, 0.f));
  gout.poison(); gr.poison(); gdx.poison();
  px::cuda::rmsnorm_forward<bf16>(gout.p, gr.p, gx.p, gg.p, N, d);
  px::cuda::rmsnorm_backward<bf16>(gdx.p, gdg.p, gdo.p, gx.p, gg.p, gr.p, N, d);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gout.download(), out), kTolBF16);
  EXPECT_LT(rel_err(gdx.download(), dx), kTolBF16);
  EXPECT_LT(rel_err(gdg.download(), dg), 1e-4);
}

TEST(CudaOps, Rope) {
  PX_SKIP_IF_NO_GPU();
  int B = 2, Tn = 77, H = 3, hd = 64;
  size_t n = (size_t)B * Tn * H * hd;
  auto x = randn(n, 7200), dy = randn(n, 7201);
  std::vector<float> out(n), din(n);
  px::cpu::rope_forward<float>(out.data(), x.data(), B, Tn, H, hd);
  px::cpu::rope_backward<float>(din.data(), dy.data(), B, Tn, H, hd);
  DBuf<float> gx(x), gout(n), gdy(dy), gdin(n);
  gout.poison(); gdin.poison();
  px::cuda::rope_forward<float>(gout.p, gx.p, B, Tn, H, hd);
  px::cuda::rope_backward<float>(gdin.p, gdy.p, B, Tn, H, hd);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gout.download(), out), kTolF32);
  EXPECT_LT(rel_err(gdin.download(), din), kTolF32);
  // in place
  px::cuda::rope_forward<float>(gx.p, gx.p, B, Tn, H, hd);
  EXPECT_LT(rel_err(gx.download(), out), kTolF32);
}

// fp32 angle math at long positions (t up to 4099), both dtypes, the two-tensor in-place
// launchers, and the scalar fallback (hd/2 not a multiple of 8).
TEST(CudaOps, RopeLongPositionsAndPairs) {
  PX_SKIP_IF_NO_GPU();
  struct C { int B, Tn, H, hd; };
  uint64_t seed = 7250;
  for (C c : {C{1, 4100, 2, 64}, C{2, 300, 3, 128}, C{1, 2100, 2, 32}, C{2, 50, 3, 12}}) {
    const size_t n = (size_t)c.B * c.Tn * c.H * c.hd;
    auto x = randn(n, ++seed), y = round_bf16(randn(n, ++seed));
    std::vector<float> fx(n), by(n), bx_back(n);
    px::cpu::rope_forward<float>(fx.data(), x.data(), c.B, c.Tn, c.H, c.hd);
    px::cpu::rope_forward<float>(by.data(), y.data(), c.B, c.Tn, c.H, c.hd);
    px::cpu::rope_backward<float>(bx_back.data(), x.data(), c.B, c.Tn, c.H, c.hd);
    // fp32, out of place and via the pair launcher (in place)
    DBuf<float> gx(x), gout(n), ga(x), gb(x);
    gout.poison();
    px::cuda::rope_forward<float>(gout.p, gx.p, c.B, c.Tn, c.H, c.hd);
    px::cuda::rope_forward2<float>(ga.p, gb.p, c.B, c.Tn, c.H, c.hd);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(gout.download(), fx), kTolF32) << c.Tn << " " << c.hd;
    EXPECT_LT(rel_err(ga.download(), fx), kTolF32);
    EXPECT_LT(rel_err(gb.download(), fx), kTolF32);
    px::cuda::rope_backward2<float>(ga.p, gb.p, c.B, c.Tn, c.H, c.hd);  // undoes the rotation
    EXPECT_LT(rel_err(ga.download(), x), kTolF32);
    gout.poison();
    px::cuda::rope_backward<float>(gout.p, gx.p, c.B, c.Tn, c.H, c.hd);
    EXPECT_LT(rel_err(gout.download(), bx_back), kTolF32);
    // bf16 storage (fp32 math): within bf16 rounding of the CPU op on the same inputs
    DBuf<bf16> gy(to_bf16(y)), gy2(to_bf16(y)), gyo(n);
    gyo.poison();
    px::cuda::rope_forward<bf16>(gyo.p, gy.p, c.B, c.Tn, c.H, c.hd);
    px::cuda::rope_forward2<bf16>(gy.p, gy2.p, c.B, c.Tn, c.H, c.hd);
    cudaCheck(cudaGetLastError());
    const double e1 = rel_err(gyo.download(), by), e2 = rel_err(gy2.download(), by);
    EXPECT_LT(e1, 5e-3) << c.Tn << " " << c.hd;
    EXPECT_EQ(e1, e2);
  }
}

// Vectorised RMSNorm at the model's shapes: forward_cast (fp32 -> bf16 + fp32), the fused
// backward (residual add, bf16 copy, two-stage dg over > 1024 rows), bit-identical repeats.
TEST(CudaOps, RmsnormFusedBackward) {
  PX_SKIP_IF_NO_GPU();
  struct C { int N, d; };
  uint64_t seed = 7600;
  for (C c : {C{3001, 512}, C{700, 2048}, C{33, 136}}) {
    const int N = c.N, d = c.d;
    auto x = randn((size_t)N * d, ++seed), g = randn(d, ++seed), dout = randn((size_t)N * d, ++seed);
    auto res = randn((size_t)N * d, ++seed), dg0 = randn(d, ++seed);
    std::vector<float> out((size_t)N * d), rstd(N), dx((size_t)N * d), dg = dg0;
    px::cpu::rmsnorm_forward<float>(out.data(), rstd.data(), x.data(), g.data(), N, d);
    px::cpu::rmsnorm_backward<float>(dx.data(), dg.data(), dout.data(), x.data(), g.data(),
                                     rstd.data(), N, d);
    std::vector<float> dxr = dx;
    for (size_t i = 0; i < dxr.size(); ++i) dxr[i] += res[i];
    DBuf<float> gx(x), gg(g), gr(N), gof((size_t)N * d), gdo(dout), gres(res), gdx((size_t)N * d),
        gdg(dg0), gdg2(dg0);
    DBuf<bf16> gob((size_t)N * d), gdxb((size_t)N * d);
    DBuf<char> scratch(px::cuda::rmsnorm_backward_scratch_bytes(N, d));
    gr.poison(); gof.poison(); gob.poison(); gdx.poison(); gdxb.poison();
    px::cuda::rmsnorm_forward_cast(gob.p, gof.p, gr.p, gx.p, gg.p, N, d);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(gof.download(), out), kTolF32);
    EXPECT_LT(rel_err(gob.download(), out), kTolBF16);
    EXPECT_LT(rel_err(gr.download(), rstd), kTolF32);
    px::cuda::rmsnorm_backward_fused<float>(gdx.p, gdxb.p, gdg.p, gdo.p, gx.p, gg.p, gr.p,
                                            gres.p, N, d, scratch.p);
    cudaCheck(cudaGetLastError());
    auto dx1 = gdx.download();
    auto dg1 = gdg.download();
    EXPECT_LT(rel_err(dx1, dxr), kTolF32) << N << " " << d;
    EXPECT_LT(rel_err(gdxb.download(), dxr), kTolBF16);
    EXPECT_LT(rel_err(dg1, dg), kTolF32);
    // repeat: bit-identical (fixed reduction order)
    gdx.poison();
    px::cuda::rmsnorm_backward_fused<float>(gdx.p, nullptr, gdg2.p, gdo.p, gx.p, gg.p, gr.p,
                                            gres.p, N, d, scratch.p);
    EXPECT_EQ(gdx.download(), dx1);
    EXPECT_EQ(gdg2.download(), dg1);
    // plain launcher (stream-ordered scratch), no residual
    DBuf<float> gdg3(dg0);
    gdx.poison();
    px::cuda::rmsnorm_backward<float>(gdx.p, gdg3.p, gdo.p, gx.p, gg.p, gr.p, N, d);
    EXPECT_LT(rel_err(gdx.download(), dx), kTolF32);
    EXPECT_EQ(gdg3.download(), dg1);
  }
}

TEST(CudaOps, RouterForwardBackwardStats) {
  PX_SKIP_IF_NO_GPU();
  struct C { int N, E, k; bool bias; };
  uint64_t seed = 7300;
  for (C c : {C{513, 64, 8, false}, C{300, 16, 2, true}, C{77, 100, 6, true}, C{40, 8, 1, false}}) {
    int N = c.N, E = c.E, k = c.k;
    auto logits = randn((size_t)N * E, ++seed, 2.f);
    auto bias = randn(E, ++seed, 0.01f);
    auto dgates = randn((size_t)N * k, ++seed), aux = randn(E, ++seed, 0.1f);
    std::vector<float> probs((size_t)N * E), gates((size_t)N * k), dl((size_t)N * E);
    std::vector<int32_t> idx((size_t)N * k);
    px::cpu::router_forward<float>(probs.data(), idx.data(), gates.data(), logits.data(),
                                   c.bias ? bias.data() : nullptr, N, E, k);
    px::cpu::router_backward<float>(dl.data(), dgates.data(), probs.data(), idx.data(),
                                    gates.data(), aux.data(), N, E, k);
    DBuf<float> gl(logits), gb(bias), gp((size_t)N * E), gg((size_t)N * k), gdg(dgates), ga(aux),
        gdl((size_t)N * E), gmean(E);
    DBuf<int32_t> gi((size_t)N * k), gcnt(E);
    gp.poison(); gg.poison(); gi.poison(); gdl.poison(); gmean.poison(); gcnt.poison();
    px::cuda::router_forward(gp.p, gi.p, gg.p, gl.p, c.bias ? gb.p : nullptr, N, E, k);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(gp.download(), probs), kTolF32);
    EXPECT_EQ(gi.download(), idx) << "E=" << E << " k=" << k;
    EXPECT_LT(rel_err(gg.download(), gates), kTolF32);
    px::cuda::router_backward(gdl.p, gdg.p, gp.p, gi.p, gg.p, ga.p, N, E, k);
    cudaCheck(cudaGetLastError());
    EXPECT_LT(rel_err(gdl.download(), dl), kTolF32);
    px::cuda::router_stats(gcnt.p, gmean.p, gp.p, gi.p, N, E, k);
    std::vector<int32_t> cnt(E, 0);
    std::vector<double> mean(E, 0.0);
    for (size_t a = 0; a < idx.size(); ++a) cnt[idx[a]]++;
    for (int n = 0; n < N; ++n)
      for (int e = 0; e < E; ++e) mean[e] += probs[(size_t)n * E + e] / N;
    EXPECT_EQ(gcnt.download(), cnt);
    EXPECT_LT(rel_err(gmean.download(), mean), kTolF32);
  }
}

TEST(CudaOps, CrossEntropy) {
  PX_SKIP_IF_NO_GPU();
  int N = 300, V = 5000;
  auto logits = randn((size_t)N * V, 7400, 3.f);
  std::vector<int32_t> tg(N);
  std::mt19937 r(7401);
  for (auto& t : tg) t = r() % V;
  std::vector<float> dl((size_t)N * V);
  double loss = px::cpu::cross_entropy<float>(dl.data(), logits.data(), tg.data(), N, V, 1.f / N);
  DBuf<float> gl(logits), gdl((size_t)N * V), gloss(N);
  DBuf<int32_t> gt(tg);
  gdl.poison(); gloss.poison();
  double gloss_mean = px::cuda::cross_entropy_mean(gdl.p, gloss.p, gl.p, gt.p, N, V, 1.f / N);
  cudaCheck(cudaGetLastError());
  EXPECT_NEAR(gloss_mean, loss, 1e-5 * std::abs(loss));
  EXPECT_LT(rel_err(gdl.download(), dl), kTolF32);
  // in place (dlogits aliases logits)
  px::cuda::cross_entropy(gl.p, gloss.p, gl.p, gt.p, N, V, 1.f / N);
  EXPECT_LT(rel_err(gl.download(), dl), kTolF32);
}

TEST(CudaOps, AdamW) {
  PX_SKIP_IF_NO_GPU();
  size_t n = 100003;
  auto p = randn(n, 7500), g = randn(n, 7501), m = randn(n, 7502, 0.1f);
  auto v = randu(n, 7503, 0.f, 0.1f);
  auto rp = p, rm = m, rv = v;
  for (int step = 1; step <= 3; ++step)
    px::cpu::adamw_update(rp.data(), g.data(), rm.data(), rv.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f,
                          0.1f, step);
  DBuf<float> gp(p), gg(g), gm(m), gv(v);
  DBuf<bf16> gpb(n);
  gpb.poison();
  for (int step = 1; step <= 3; ++step)
    px::cuda::adamw_update<float>(gp.p, gg.p, gm.p, gv.p, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step,
                                  gpb.p);
  cudaCheck(cudaGetLastError());
  EXPECT_LT(rel_err(gp.download(), rp), kTolF32);
  EXPECT_LT(rel_err(gm.download(), rm), kTolF32);
  EXPECT_LT(rel_err(gv.download(), rv), kTolF32);
  EXPECT_LT(rel_err(gpb.download(), rp), kTolBF16);
}
