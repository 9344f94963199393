// train.recompute = "attention" (ModelMemory::recompute_attention): the layers share one
// layer's attention probabilities and each layer's backward recomputes its own from q and k;
// "experts" (recompute_experts) also shares one MoE layer's routed hidden activations. The
// loss and every gradient equal the stored path's bit for bit (that path has the
// finite-difference tests, test_grad_model.cpp), in fp32 and fp64, over two forward/backward
// passes of different batches, and the activations shrink by the other layers' buffers.
// Mode parallax's model (no routed arenas) also leaves out the routed rows' activations
// (its executor's recomputation: MpiParallax.RecomputeIsBitIdentical).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "config/config.hpp"     // defines: Config, load_config
#include "model/moe_model.hpp"   // defines: MoeModel, ModelMemory
#include "random_data.hpp"       // defines: randn_vec

using namespace px;

namespace {

ModelConfig small_model() {
  Config c = load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml", {"model.n_layers=3"});
  return c.model;
}

template <class T>
void expect_recompute_is_bit_identical(bool experts) {
  const ModelConfig mc = small_model();
  const int B = 2, S = mc.seq_len;
  const ModelMemory mem{true, true, experts};
  MoeModel<T> stored(mc, B, S), recomputed(mc, B, S, mem);
  stored.init_params(21);
  recomputed.init_params(21);
  // move the weights off the 0.02 init so the attention is far from uniform
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const auto noise = test::randn_vec<T>(stored.layout().size(a), 5 + (uint32_t)a, T(0.3));
    for (size_t i = 0; i < noise.size(); ++i) {
      stored.params(a)[i] += noise[i];
      recomputed.params(a)[i] += noise[i];
    }
  }
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> tok(0, mc.vocab - 1);
  stored.zero_grad();
  recomputed.zero_grad();
  for (int pass = 0; pass < 2; ++pass) {  // gradients accumulate over two batches
    std::vector<int32_t> in((size_t)B * S), tg(in.size());
    for (size_t i = 0; i < in.size(); ++i) in[i] = tok(rng), tg[i] = tok(rng);
    const double ls = stored.forward(in.data(), tg.data());
    const double lr = recomputed.forward(in.data(), tg.data());
    EXPECT_EQ(lr, ls) << "pass " << pass;
    stored.backward();
    recomputed.backward();
  }
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = stored.layout().size(a);
    const std::vector<T> gs(stored.grads(a), stored.grads(a) + n), gr(recomputed.grads(a), recomputed.grads(a) + n);
    EXPECT_EQ(gr, gs) << arena_name(a) << " gradients";
    double norm = 0;
    for (T g : gs) norm += (double)g * g;
    EXPECT_GT(norm, 0.0) << arena_name(a);  // gradients that can differ
  }
  const size_t one_layer = (size_t)B * mc.n_heads * S * S * sizeof(T);
  const size_t glu = mc.expert_act == ExpertActKind::SWIGLU ? 3 : 2;
  const size_t one_moe = glu * B * S * mc.top_k * mc.expert_hidden * sizeof(T);
  EXPECT_EQ(stored.activation_bytes() - recomputed.activation_bytes(),
            (mc.n_layers - 1) * one_layer + (experts ? (mc.moe_layers() - 1) * one_moe : 0));
  EXPECT_EQ(recomputed.activation_bytes(), MoeModel<T>::activation_bytes(mc, B, S, mem));
}

}  // namespace

TEST(Recompute, AttentionIsBitIdenticalInFloat) { expect_recompute_is_bit_identical<float>(false); }
TEST(Recompute, AttentionIsBitIdenticalInDouble) { expect_recompute_is_bit_identical<double>(false); }
TEST(Recompute, ExpertsIsBitIdenticalInFloat) { expect_recompute_is_bit_identical<float>(true); }
TEST(Recompute, ExpertsIsBitIdenticalInDouble) { expect_recompute_is_bit_identical<double>(true); }

TEST(Recompute, AModelWithoutRoutedArenasHoldsNoRoutedActivations) {
  const ModelConfig mc = small_model();
  const int B = 2, S = mc.seq_len;
  const size_t glu = mc.expert_act == ExpertActKind::SWIGLU ? 3 : 2;
  const size_t routed = (size_t)mc.moe_layers() * glu * B * S * mc.top_k * mc.expert_hidden * sizeof(float);
  EXPECT_EQ(MoeModel<float>::activation_bytes(mc, B, S) - MoeModel<float>::activation_bytes(mc, B, S, ModelMemory{false}),
            routed);
}
