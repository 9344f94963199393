// CudaModel optimizer state round trip: a model rebuilt from downloaded parameters and AdamW
// moments continues bit-identically (what `parallax train --resume` with device = "cuda" needs).
#include "test_util.hpp"

#include "cuda_model.cuh"       // defines: px::cuda::CudaModel
#include "model/moe_model.hpp"  // defines: px::MoeModel

using px::Arena;
using px::ModelConfig;

TEST(CudaModelState, OptimizerRoundTripResumesBitIdentically) {
  PX_SKIP_IF_NO_GPU();
  ModelConfig c;
  c.d_model = 128, c.n_layers = 2, c.n_heads = 2, c.vocab = 512, c.seq_len = 64;
  c.n_experts = 8, c.top_k = 2, c.expert_hidden = 64, c.dense_hidden = 256;
  const int B = 2, N = B * c.seq_len;
  px::MoeModel<float> host(c, B, c.seq_len);
  host.init_params(7);
  const px::ParamLayout& L = host.layout();
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> toks(4, std::vector<int32_t>(2 * N));
  for (auto& t : toks)
    for (auto& x : t) x = (int32_t)(rng() % c.vocab);

  px::cuda::CudaModel a(c, B, c.seq_len);
  a.upload_params(host.params(Arena::BACKBONE), host.params(Arena::EXPERTS));
  for (int s = 0; s < 2; ++s) a.step(toks[s].data(), toks[s].data() + N, 1e-3f, 1.f, 0.1f);
  std::vector<float> pb(L.backbone_size), pe(L.experts_size), mb(pb.size()), me(pe.size()),
      vb(pb.size()), ve(pe.size());
  a.download_params(pb.data(), pe.data());
  a.download_optimizer(mb.data(), me.data(), vb.data(), ve.data());
  for (const std::vector<float>* v : {&mb, &vb}) {  // real moments, not zeros
    double s = 0;
    for (float x : *v) s += std::abs(x);
    EXPECT_GT(s, 0.0);
  }

  px::cuda::CudaModel b(c, B, c.seq_len);
  b.upload_params(pb.data(), pe.data());
  b.upload_optimizer(mb.data(), me.data(), vb.data(), ve.data(), a.steps_taken());
  for (int s = 2; s < 4; ++s) {
    const double la = a.step(toks[s].data(), toks[s].data() + N, 1e-3f, 1.f, 0.1f);
    const double lb = b.step(toks[s].data(), toks[s].data() + N, 1e-3f, 1.f, 0.1f);
    EXPECT_EQ(la, lb) << "step " << s;
  }
  std::vector<float> qa(pb.size()), qb(pb.size()), ea(pe.size()), eb(pe.size());
  a.download_params(qa.data(), ea.data());
  b.download_params(qb.data(), eb.data());
  EXPECT_EQ(qa, qb);
  EXPECT_EQ(ea, eb);
}
