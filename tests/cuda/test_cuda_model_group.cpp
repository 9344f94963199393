// CudaModel as one rank of a distributed learner (backend/device_learner): the split step
// (forward_backward, grad_norm, apply_update) against the fused step(), a data-parallel group
// (set_group) against the rank alone, and routed experts run by a host executor
// (set_routed_experts, no expert arena on the device) against the experts on the device. Fresh random tokens and parameters;
// tolerances, not bits (bf16 GEMMs, atomics in the embedding backward).
#include "test_util.hpp"

#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>
#include <vector>

#include "cuda_model.cuh"       // defines: px::cuda::CudaModel
#include "model/layers.hpp"     // defines: px::RoutedExperts
#include "model/moe_model.hpp"  // defines: px::MoeModel
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu::expert_ffn_forward, expert_ffn_backward

using px::Arena;
using px::ModelConfig;

namespace {

ModelConfig group_config() {
  ModelConfig c;
  c.d_model = 128, c.n_layers = 2, c.n_heads = 2, c.vocab = 512, c.seq_len = 64;
  c.n_experts = 8, c.top_k = 2, c.expert_hidden = 64, c.dense_hidden = 256, c.n_shared = 1;
  return c;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) d += (double)(a[i] - b[i]) * (a[i] - b[i]), n += (double)b[i] * b[i];
  return std::sqrt(d / n);
}

std::vector<int32_t> random_tokens(int n, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = (int32_t)(rng() % vocab);
  return t;
}

struct Fixture {
  ModelConfig c = group_config();
  int B = 2, N = 2 * c.seq_len;
  px::MoeModel<float> host{c, B, c.seq_len};
  std::vector<int32_t> tok = random_tokens(2 * N, c.vocab, 5);
  Fixture() { host.init_params(17); }
  void upload(px::cuda::CudaModel& m) {
    m.upload_params(host.params(Arena::BACKBONE), host.params(Arena::EXPERTS));
  }
  std::vector<float> grads(const px::cuda::CudaModel& m, int a) const {
    std::vector<float> g(a == 0 ? host.layout().backbone_size : host.layout().experts_size);
    m.download_arena(a, g.data(), true);
    return g;
  }
};

// The routed experts of the fixture's host model run on the CPU (what ParallaxExperts and
// ExpertParallel do with their own weights): forward and input gradients only.
class CpuExperts final : public px::RoutedExperts<float> {
 public:
  explicit CpuExperts(px::MoeModel<float>& m) : m_(m) {}
  void forward(int moe_layer, const float* xp, const int32_t* bounds, float* yp) override {
    const ModelConfig& c = m_.config();
    const int rows = bounds[c.n_experts], d = c.d_model, h = c.expert_hidden;
    Saved& s = saved_[moe_layer];
    s.bounds.assign(bounds, bounds + c.n_experts + 1);
    s.x.assign(xp, xp + (size_t)rows * d);
    s.a.assign((size_t)rows * h, 0.f), s.b.assign((size_t)rows * h, 0.f), s.act.assign((size_t)rows * h, 0.f);
    const px::LayerOffsets& o = m_.layout().layers[c.dense_layers + moe_layer];
    const float* we = m_.params(Arena::EXPERTS);
    px::cpu::expert_ffn_forward(yp, s.a.data(), s.b.data(), s.act.data(), xp, we + o.expert_w1,
                                we + o.expert_w3, we + o.expert_w2, bounds, c.n_experts, d, h,
                                px::cpu::EXPERT_ACT_SWIGLU);
  }
  void backward(int moe_layer, const float* dyp, float* dxp) override {
    const ModelConfig& c = m_.config();
    Saved& s = saved_[moe_layer];
    const int rows = s.bounds[c.n_experts], d = c.d_model, h = c.expert_hidden;
    std::vector<float> s1((size_t)rows * h), s2(s1.size()), s3(s1.size());
    const px::LayerOffsets& o = m_.layout().layers[c.dense_layers + moe_layer];
    const float* we = m_.params(Arena::EXPERTS);
    px::cpu::expert_ffn_backward(dxp, (float*)nullptr, (float*)nullptr, (float*)nullptr, dyp,
                                 s.x.data(), s.a.data(), s.b.data(), s.act.data(), we + o.expert_w1,
                                 we + o.expert_w3, we + o.expert_w2, s.bounds.data(), c.n_experts,
                                 d, h, px::cpu::EXPERT_ACT_SWIGLU, s1.data(), s2.data(), s3.data());
    ++backwards;
  }
  int backwards = 0;

 private:
  struct Saved {
    std::vector<int32_t> bounds;
    std::vector<float> x, a, b, act;
  };
  px::MoeModel<float>& m_;
  std::map<int, Saved> saved_;
};

}  // namespace

TEST(CudaModelGroup, SplitStepEqualsTheFusedStep) {
  PX_SKIP_IF_NO_GPU();
  Fixture f;
  px::cuda::CudaModel fused(f.c, f.B, f.c.seq_len), split(f.c, f.B, f.c.seq_len);
  f.upload(fused);
  f.upload(split);
  const float lr = 1e-3f, clip = 0.05f, wd = 0.1f;  // (a clip that binds)
  for (int s = 0; s < 2; ++s) {
    const std::vector<int32_t> t = random_tokens(2 * f.N, f.c.vocab, 100 + s);
    fused.step(t.data(), t.data() + f.N, lr, clip, wd);
    split.forward_backward(t.data(), t.data() + f.N);
    const double norm = split.grad_norm();
    EXPECT_NEAR(norm, fused.last_grad_norm(), 1e-4 * norm) << "step " << s;
    ASSERT_GT(norm, clip);
    split.apply_update(lr, wd, (float)(clip / norm));
  }
  std::vector<float> pa(f.host.layout().backbone_size), pb(pa.size());
  fused.download_arena(0, pa.data(), false);
  split.download_arena(0, pb.data(), false);
  EXPECT_LT(rel_diff(pb, pa), 1e-5);
  EXPECT_EQ(split.steps_taken(), 2);
}

// Two ranks with the same tokens: the group's statistics are twice one rank's, its token count
// 2N; each rank's CE share and gradient are half the rank-alone ones, the aux loss the same.
TEST(CudaModelGroup, GroupOfTwoIdenticalRanksHalvesTheShares) {
  PX_SKIP_IF_NO_GPU();
  Fixture f;
  px::cuda::CudaModel alone(f.c, f.B, f.c.seq_len), ranked(f.c, f.B, f.c.seq_len);
  f.upload(alone);
  f.upload(ranked);
  int calls = 0;
  const std::function<void(double*, int)> twice = [&calls](double* v, int n) {
    for (int i = 0; i < n; ++i) v[i] *= 2;
    ++calls;
  };
  ranked.set_group(2.0 * f.N, &twice);
  alone.forward_backward(f.tok.data(), f.tok.data() + f.N);
  ranked.forward_backward(f.tok.data(), f.tok.data() + f.N);
  EXPECT_EQ(calls, f.c.moe_layers());
  EXPECT_NEAR(ranked.last_ce(), alone.last_ce() / 2, 1e-5 * alone.last_ce());
  EXPECT_NEAR(ranked.last_aux(), alone.last_aux(), 1e-4 * alone.last_aux() + 1e-7);
  for (int a = 0; a < 2; ++a) {
    std::vector<float> g = f.grads(ranked, a);
    for (float& x : g) x *= 2;
    EXPECT_LT(rel_diff(g, f.grads(alone, a)), 1e-4) << "arena " << a;
  }
  // evaluation stays local
  EXPECT_NEAR(ranked.forward_loss(f.tok.data(), f.tok.data() + f.N),
              alone.forward_loss(f.tok.data(), f.tok.data() + f.N), 1e-5);
}

TEST(CudaModelGroup, HostExpertsMatchTheDeviceExperts) {
  PX_SKIP_IF_NO_GPU();
  Fixture f;
  using Experts = px::cuda::CudaModel::Experts;
  px::cuda::CudaModel device(f.c, f.B, f.c.seq_len), staged(f.c, f.B, f.c.seq_len, Experts::ON_HOST);
  // no expert arena on the device: parameters, bf16 copy, gradients and two moments less
  const size_t expert_bytes = f.host.layout().experts_size * (4 * sizeof(float) + 2);
  EXPECT_LE(staged.bytes() + expert_bytes, device.bytes() + 4096);
  EXPECT_EQ(staged.bytes(), px::cuda::CudaModel::device_bytes(f.c, f.B, f.c.seq_len, Experts::ON_HOST));
  f.upload(device);
  f.upload(staged);
  CpuExperts ex(f.host);
  staged.set_routed_experts(&ex);
  const double ld = device.forward_backward(f.tok.data(), f.tok.data() + f.N);
  const double ls = staged.forward_backward(f.tok.data(), f.tok.data() + f.N);
  EXPECT_NEAR(ls, ld, 1e-2 * ld);  // (fp32 host experts vs bf16 device GEMMs)
  EXPECT_EQ(ex.backwards, f.c.moe_layers());
  EXPECT_LT(rel_diff(f.grads(staged, 0), f.grads(device, 0)), 2e-2);
  // the norm is the backbone's, and an update steps the backbone alone
  std::vector<float> g0 = f.grads(staged, 0);
  double ss = 0;
  for (float g : g0) ss += (double)g * g;
  EXPECT_NEAR(staged.grad_norm(), std::sqrt(ss), 1e-4 * std::sqrt(ss));
  std::vector<float> b0(g0.size()), b1(g0.size());
  staged.download_arena(0, b0.data(), false);
  staged.apply_update(1e-2f, 0.1f, 1.f);
  staged.download_arena(0, b1.data(), false);
  EXPECT_GT(rel_diff(b1, b0), 1e-4);
  // a model with experts on the host refuses a forward without their executor
  px::cuda::CudaModel bare(f.c, f.B, f.c.seq_len, Experts::ON_HOST);
  f.upload(bare);
  EXPECT_THROW(bare.forward_loss(f.tok.data(), f.tok.data() + f.N), std::logic_error);
}
