// An expert home on the GPU (kernels/home_state, experts.home_device = "cuda") against the CPU
// home's arithmetic on fresh random data: the weight gradient of sketch rows (grouped expert
// FFN, bf16 operands) against expert_rows_gradient (fp32), and the update's pieces (nonzero
// check, scale and sum of squares, clip scale, AdamW) against the CPU loops on the same input.
#include "test_util.hpp"

#include <cmath>
#include <random>
#include <vector>

#include "home_state.cuh"          // defines: px::cuda::HomeState
#include "ops/cpu/cpu_ops.hpp"     // defines: px::cpu::adamw_update
#include "sketch/sketch_home.hpp"  // defines: px::expert_rows_gradient, HomeExpertSlot

namespace {

std::vector<float> randn(size_t n, float scale, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) d += (double)(a[i] - b[i]) * (a[i] - b[i]), n += (double)b[i] * b[i];
  return std::sqrt(d / n);
}

void check_rows_gradient(bool swiglu) {
  const int K = 3, d = 64, h = 96, rows = 37;
  const size_t wsz = (size_t)d * h, per = (swiglu ? 3 : 2) * wsz;
  std::vector<float> masters = randn(K * per, 0.05f, 1), zeros(K * per, 0.f);
  px::cuda::HomeState gpu(K, d, h, swiglu);
  gpu.upload(masters.data(), zeros.data(), zeros.data(), zeros.data());
  EXPECT_FALSE(gpu.any_grad());
  // the CPU home: expert_rows_gradient on slot 1
  std::vector<float> cpu_grads(K * per, 0.f);
  const int slot = 1;
  float* w = masters.data() + slot * per;
  float* g = cpu_grads.data() + slot * per;
  const px::HomeExpertSlot s{0, slot, w, swiglu ? w + wsz : nullptr, w + per - wsz,
                             g, swiglu ? g + wsz : nullptr, g + per - wsz};
  const std::vector<float> X = randn((size_t)rows * d, 1.f, 2), dY = randn((size_t)rows * d, 0.1f, 3);
  px::ExpertRowsScratch scratch;
  const auto act = swiglu ? px::cpu::EXPERT_ACT_SWIGLU : px::cpu::EXPERT_ACT_RELU2;
  for (int rep = 0; rep < 2; ++rep) {  // accumulated twice
    px::expert_rows_gradient(s, X.data(), dY.data(), rows, d, h, act, scratch);
    gpu.accumulate_rows(slot, X.data(), dY.data(), rows);
  }
  std::vector<float> gpu_grads(K * per);
  gpu.download(nullptr, gpu_grads.data(), nullptr, nullptr);
  EXPECT_TRUE(gpu.any_grad());
  EXPECT_LT(rel_diff(gpu_grads, cpu_grads), 2e-2) << (swiglu ? "swiglu" : "relu2");
  for (size_t i = 0; i < per; ++i) ASSERT_EQ(gpu_grads[i], 0.f) << "slot 0 untouched";
}

}  // namespace

TEST(CudaHomeState, SketchRowsGradientMatchesTheCpuHome) {
  PX_SKIP_IF_NO_GPU();
  check_rows_gradient(true);
  check_rows_gradient(false);
}

TEST(CudaHomeState, UpdateMatchesTheCpuHome) {
  PX_SKIP_IF_NO_GPU();
  const int K = 2, d = 64, h = 64;
  const size_t wsz = (size_t)d * h, per = 3 * wsz, n = K * per;
  std::vector<float> masters = randn(n, 0.05f, 4), grads = randn(n, 0.02f, 5),
                     m = randn(n, 0.001f, 6), v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 1e-6f * (1 + (float)(i % 7));
  px::cuda::HomeState gpu(K, d, h, true);
  gpu.upload(masters.data(), grads.data(), m.data(), v.data());
  // the CPU home (ExpertHome::update's loops)
  const float inv = 0.25f, lr = 1e-3f, wd = 0.1f;
  const int step = 3;
  double ss = 0;
  for (float& g : grads) {
    g *= inv;
    ss += (double)g * g;
  }
  const double gss = gpu.scale_grads_sum_squares(inv);
  EXPECT_NEAR(gss, ss, 1e-5 * ss);
  const float clip = (float)(0.5 * std::sqrt(ss)), s = clip / (float)std::sqrt(ss);
  for (float& g : grads) g *= s;
  gpu.scale_grads(s);
  for (size_t o = 0; o < n; o += wsz)
    px::cpu::adamw_update(masters.data() + o, grads.data() + o, m.data() + o, v.data() + o, wsz,
                          lr, 0.9f, 0.95f, 1e-8f, wd, step);
  gpu.adamw_step(lr, wd, step);
  std::vector<float> pm(n), pg(n), pmm(n), pv(n);
  gpu.download(pm.data(), pg.data(), pmm.data(), pv.data());
  EXPECT_LT(rel_diff(pg, grads), 1e-6);
  EXPECT_LT(rel_diff(pmm, m), 1e-5);
  EXPECT_LT(rel_diff(pv, v), 1e-5);
  EXPECT_LT(rel_diff(pm, masters), 1e-6);
  gpu.zero_grads();
  EXPECT_FALSE(gpu.any_grad());
  std::vector<float> one(wsz, 1.f);
  gpu.add_grad(per + wsz, one.data(), wsz);  // expert 1's W3
  gpu.download(nullptr, pg.data(), nullptr, nullptr);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(pg[i], i >= per + wsz && i < per + 2 * wsz ? 1.f : 0.f) << i;
}
