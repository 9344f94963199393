// CudaModel optimizer state round trip: a model rebuilt from downloaded parameters and AdamW
// moments continues as the original does (what `parallax train --resume` with device = "cuda"
// needs). Not bitwise: some gradient reductions (embedding backward) use atomics, so two GPU
// runs differ in the last bits; a model resumed without its moments differs by far more.
#include "test_util.hpp"

#include <cmath>
#include <cstdio>

#include "cuda_model.cuh"       // defines: px::cuda::CudaModel
#include "model/moe_model.hpp"  // defines: px::MoeModel

using px::Arena;
using px::ModelConfig;

namespace {
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) d += (double)(a[i] - b[i]) * (a[i] - b[i]), n += (double)b[i] * b[i];
  return std::sqrt(d / n);
}
}  // namespace

TEST(CudaModelState, OptimizerRoundTripResumes) {
  PX_SKIP_IF_NO_GPU();
  ModelConfig c;
  c.d_model = 128, c.n_layers = 2, c.n_heads = 2, c.vocab = 512, c.seq_len = 64;
  c.n_experts = 8, c.top_k = 2, c.expert_hidden = 64, c.dense_hidden = 256;
  const int B = 2, N = B * c.seq_len;
  px::MoeModel<float> host(c, B, c.seq_len);
  host.init_params(7);
  const px::ParamLayout& layout = host.layout();
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> toks(4, std::vector<int32_t>(2 * N));
  for (auto& t : toks)
    for (auto& x : t) x = (int32_t)(rng() % c.vocab);

  px::cuda::CudaModel a(c, B, c.seq_len);
  a.upload_params(host.params(Arena::BACKBONE), host.params(Arena::EXPERTS));
  for (int s = 0; s < 2; ++s) a.step(toks[s].data(), toks[s].data() + N, 1e-3f, 1.f, 0.1f);
  std::vector<float> pb(layout.backbone_size), pe(layout.experts_size), mb(pb.size()), me(pe.size()),
      vb(pb.size()), ve(pe.size());
  a.download_params(pb.data(), pe.data());
  a.download_optimizer(mb.data(), me.data(), vb.data(), ve.data());
  for (const std::vector<float>* v : {&mb, &vb}) {  // real moments, not zeros
    double s = 0;
    for (float x : *v) s += std::abs(x);
    EXPECT_GT(s, 0.0);
  }

  px::cuda::CudaModel b(c, B, c.seq_len), fresh(c, B, c.seq_len);
  b.upload_params(pb.data(), pe.data());
  b.upload_optimizer(mb.data(), me.data(), vb.data(), ve.data(), a.steps_taken());
  fresh.upload_params(pb.data(), pe.data());  // same parameters, moments reset
  for (int s = 2; s < 4; ++s) {
    const double la = a.step(toks[s].data(), toks[s].data() + N, 1e-3f, 1.f, 0.1f);
    const double lb = b.step(toks[s].data(), toks[s].data() + N, 1e-3f, 1.f, 0.1f);
    fresh.step(toks[s].data(), toks[s].data() + N, 1e-3f, 1.f, 0.1f);
    EXPECT_NEAR(la, lb, 1e-6 * la) << "step " << s;
  }
  std::vector<float> qa(pb.size()), qb(pb.size()), qf(pb.size()), ea(pe.size()), eb(pe.size()),
      ef(pe.size());
  a.download_params(qa.data(), ea.data());
  b.download_params(qb.data(), eb.data());
  fresh.download_params(qf.data(), ef.data());
  const double resumed = rel_diff(qb, qa), reset = rel_diff(qf, qa);
  std::printf("params after resume: rel diff %.3g (moments reset: %.3g)\n", resumed, reset);
  EXPECT_LT(resumed, 1e-5);
  EXPECT_LT(rel_diff(eb, ea), 1e-5);
  EXPECT_GT(reset, 100 * resumed);  // the moments mattered and were restored
}
