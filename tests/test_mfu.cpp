// Model FLOPs utilization (train/mfu.hpp): the training FLOPs of a token are the plan's, the
// peak table knows the datacenter GPUs by their CUDA names (the PCIe H100 apart from the SXM
// one) and nothing else, and the utilization is tokens/s x FLOPs per token / peak.
#include <gtest/gtest.h>

#include "config/config.hpp"   // defines: load_config
#include "train/mfu.hpp"       // defines: train_flops_per_token, peak_bf16_flops
#include "train/plan.hpp"      // defines: make_plan

using namespace px;

TEST(Mfu, FlopsPerTokenAreThePlansAndCountActiveParameters) {
  for (const char* c : {"tiny.toml", "small.toml", "20b_parallax.toml", "176b_parallax.toml"}) {
    const Config cfg = load_config(std::string(PX_SOURCE_DIR) + "/experiments/" + c, {});
    EXPECT_EQ(train_flops_per_token(cfg.model), make_plan(cfg).train_flops_per_token) << c;
  }
  // by hand, a model of one dense layer and one MoE layer: 6 x active + attention
  ModelConfig m;
  m.d_model = 8, m.n_layers = 2, m.n_heads = 2, m.vocab = 10, m.seq_len = 4, m.dense_layers = 1;
  m.n_experts = 4, m.top_k = 2, m.n_shared = 1, m.expert_hidden = 3, m.dense_hidden = 5;
  const double attn = 4 * 8 * 8, dense = 3 * 8 * 5, shared = 3 * 8 * 3, router = 8 * 4, head = 8 * 10;
  const double routed_active = 2 * 3 * 8 * 3;
  const double active = 2 * attn + dense + shared + router + head + routed_active;
  // (+ the norms' gains: 2 per layer of d, and the final one)
  const double norms = 5 * 8;
  EXPECT_DOUBLE_EQ(train_flops_per_token(m), 6 * (active + norms) + 12.0 * 2 * 8 * 4 / 2);
}

TEST(Mfu, PeakTableKnowsTheDevicesByName) {
  EXPECT_DOUBLE_EQ(peak_bf16_flops("NVIDIA H100 80GB HBM3"), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops("NVIDIA H100 PCIe"), 756e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops("NVIDIA H200"), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_DOUBLE_EQ(peak_bf16_flops("NVIDIA GeForce RTX 4090"), 165.2e12);
  EXPECT_EQ(peak_bf16_flops("Intel Xeon"), 0.0);
  EXPECT_EQ(peak_bf16_flops(""), 0.0);
  EXPECT_DOUBLE_EQ(model_flops_utilization(1e4, 1e9, 1e14), 0.1);
  EXPECT_EQ(model_flops_utilization(1e4, 1e9, 0), 0.0);
}
