// train.recompute = "attention" (ModelMemory::recompute_attention): no layer keeps its
// attention probabilities (one head's at a time) and each layer's backward recomputes them from
// q and k;
// "experts" (recompute_experts) also shares one MoE layer's routed hidden activations. The
// loss and every gradient equal the stored path's bit for bit (that path has the
// finite-difference tests, test_grad_model.cpp), in fp32 and fp64, over two forward/backward
// passes of different batches, and the activations shrink by the other layers' buffers;
// "layers" (recompute_layers) keeps each layer's input alone and recomputes its forward.
// Mode parallax's model (no routed arenas) also leaves out the routed rows' activations
// (its executor's recomputation: MpiParallax.RecomputeIsBitIdentical).
#include <gtest/gtest.h>

#include <random>
#include <utility>
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

// The loss, every gradient and the routing counts of a model with memory `mem` equal the stored
// path's bit for bit; returns the two models' activation bytes (stored, recomputed).
template <class T>
std::pair<size_t, size_t> expect_bit_identical(const ModelConfig& mc, int B, int S, ModelMemory mem) {
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
    EXPECT_EQ(recomputed.expert_counts(), stored.expert_counts()) << "pass " << pass;
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
  EXPECT_EQ(recomputed.activation_bytes(), MoeModel<T>::activation_bytes(mc, B, S, mem));
  return {stored.activation_bytes(), recomputed.activation_bytes()};
}

template <class T>
void expect_recompute_is_bit_identical(bool experts) {
  const ModelConfig mc = small_model();
  const int B = 2, S = mc.seq_len;
  const auto [stored, recomputed] = expect_bit_identical<T>(mc, B, S, ModelMemory{true, true, experts});
  const size_t one_layer = (size_t)B * mc.n_heads * S * S * sizeof(T);
  const size_t glu = mc.expert_act == ExpertActKind::SWIGLU ? 3 : 2;
  const size_t one_moe = glu * B * S * mc.top_k * mc.expert_hidden * sizeof(T);
  EXPECT_EQ(stored - recomputed,
            mc.n_layers * one_layer + (experts ? (mc.moe_layers() - 1) * one_moe : 0));
}

// train.recompute = "layers": each layer keeps its input (and its routing counts) alone; one
// dense and one MoE layer's activations are shared and every backward runs its layer's
// forward again. A 4-layer model (1 dense + 3 MoE layers) holds two MoE layers' sets fewer.
template <class T>
void expect_layer_recompute_is_bit_identical() {
  ModelConfig mc = small_model();
  mc.n_layers = 4;
  const int B = 2, S = mc.seq_len;
  ModelMemory mem;
  mem.recompute_layers = true;
  const auto [stored, recomputed] = expect_bit_identical<T>(mc, B, S, mem);
  ModelMemory one = mem;  // a model of one dense and one MoE layer holds the same shared sets
  ModelConfig two = mc;
  two.n_layers = 2;
  const size_t x = (size_t)B * S * mc.d_model * sizeof(T), bounds = (mc.n_experts + 1) * sizeof(int32_t);
  const size_t moe_set = MoeModel<T>::activation_bytes(mc, B, S, ModelMemory{}) -
                         MoeModel<T>::activation_bytes(two, B, S, ModelMemory{});  // 2 MoE layers' stored
  // (the recomputed model: one MoE set for three layers, each layer's own bounds besides the
  // set's, the recomputed layer's output; and no attention probabilities in the dense and the
  // MoE set)
  const size_t probs = (size_t)B * mc.n_heads * S * S * sizeof(T);
  EXPECT_EQ(stored - recomputed, moe_set - 2 * x - 3 * bounds - x + 2 * probs);
  EXPECT_EQ(recomputed - MoeModel<T>::activation_bytes(two, B, S, one), 2 * (x + bounds));
}

}  // namespace

TEST(Recompute, AttentionIsBitIdenticalInFloat) { expect_recompute_is_bit_identical<float>(false); }
TEST(Recompute, AttentionIsBitIdenticalInDouble) { expect_recompute_is_bit_identical<double>(false); }
TEST(Recompute, ExpertsIsBitIdenticalInFloat) { expect_recompute_is_bit_identical<float>(true); }
TEST(Recompute, ExpertsIsBitIdenticalInDouble) { expect_recompute_is_bit_identical<double>(true); }

TEST(Recompute, LayersIsBitIdenticalInFloat) { expect_layer_recompute_is_bit_identical<float>(); }
TEST(Recompute, LayersIsBitIdenticalInDouble) { expect_layer_recompute_is_bit_identical<double>(); }

TEST(Recompute, AModelWithoutRoutedArenasHoldsNoRoutedActivations) {
  const ModelConfig mc = small_model();
  const int B = 2, S = mc.seq_len;
  const size_t glu = mc.expert_act == ExpertActKind::SWIGLU ? 3 : 2;
  const size_t routed = (size_t)mc.moe_layers() * glu * B * S * mc.top_k * mc.expert_hidden * sizeof(float);
  EXPECT_EQ(MoeModel<float>::activation_bytes(mc, B, S) - MoeModel<float>::activation_bytes(mc, B, S, ModelMemory{false}),
            routed);
}
