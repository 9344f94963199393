// Pipeline stages (ModelMemory::layer_begin/layer_end/slots; topology.pipeline_stages): a
// chain of stage models, each holding only its layers' arena elements, computes the whole
// model's loss and gradients bit for bit (the same operations in the same order; the whole
// model has the finite-difference tests, test_grad_model.cpp), with micro-batches in flight
// in separate activation slots, in fp32 and fp64. The stages' arena spans tile the arenas,
// and the 1F1B schedule runs every micro-batch's forward and backward once, in order, with
// at most pipeline_slots micro-batches in flight.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "config/config.hpp"               // defines: Config, load_config
#include "model/moe_model.hpp"             // defines: MoeModel, ModelMemory
#include "parallel/pipeline_schedule.hpp"  // defines: one_f_one_b, pipeline_slots
#include "random_data.hpp"                 // defines: randn_vec

using namespace px;

namespace {

ModelConfig four_layers() {
  Config c = load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml",
                         {"model.n_layers=4", "model.dense_layers=1"});
  return c.model;
}

template <class T>
void perturb(MoeModel<T>& m, const ParamLayout& L) {  // off the 0.02 init, the same everywhere
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const auto noise = test::randn_vec<T>(L.size(a), 5 + (uint32_t)a, T(0.3));
    const ArenaSpan s = m.span(a);
    for (size_t i = s.lo; i < s.hi; ++i) m.params(a)[i - s.lo] += noise[i];
  }
}

// Stages at layer cuts `cuts` (e.g. {0, 1, 4}) and `micro` micro-batches run in the order
// where every forward comes first (all slots in flight), against the whole model.
template <class T>
void expect_stages_equal_whole(const std::vector<int>& cuts, int micro) {
  const ModelConfig mc = four_layers();
  const int B = 2, S = mc.seq_len, P = (int)cuts.size() - 1;
  const size_t N = (size_t)B * S, d = mc.d_model;
  MoeModel<T> whole(mc, B, S);
  whole.init_params(21);
  perturb(whole, whole.layout());
  std::vector<std::unique_ptr<MoeModel<T>>> stages;
  for (int s = 0; s < P; ++s) {
    ModelMemory mem;
    mem.layer_begin = cuts[s];
    mem.layer_end = cuts[s + 1];
    mem.slots = micro;
    stages.push_back(std::make_unique<MoeModel<T>>(mc, B, S, mem));
    stages[s]->init_params(21);
    perturb(*stages[s], whole.layout());
  }
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> tok(0, mc.vocab - 1);
  std::vector<std::vector<int32_t>> in(micro, std::vector<int32_t>(N)), tg = in;
  for (int i = 0; i < micro; ++i)
    for (size_t n = 0; n < N; ++n) in[i][n] = tok(rng), tg[i][n] = tok(rng);
  whole.zero_grad();
  std::vector<double> whole_loss;
  for (int i = 0; i < micro; ++i) {
    whole_loss.push_back(whole.forward(in[i].data(), tg[i].data()));
    whole.backward();
  }
  for (auto& st : stages) st->zero_grad();
  std::vector<double> staged_loss(micro, 0.0);
  for (int i = 0; i < micro; ++i)  // every forward, then every backward: all slots in flight
    for (int s = 0; s < P; ++s) {
      if (s > 0) std::copy_n(stages[s - 1]->stage_output(i), N * d, stages[s]->stage_input(i));
      staged_loss[i] += stages[s]->forward_stage(in[i].data(), tg[i].data(), i);
    }
  for (int i = 0; i < micro; ++i)
    for (int s = P - 1; s >= 0; --s)
      stages[s]->backward_stage(i, s + 1 < P ? stages[s + 1]->input_grad() : nullptr);
  for (int i = 0; i < micro; ++i) EXPECT_NEAR(staged_loss[i], whole_loss[i], 1e-12 * whole_loss[i]);
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    std::vector<T> joined;
    for (auto& st : stages) {
      EXPECT_EQ(st->span(a).lo, joined.size()) << "the stages' spans tile the arena";
      joined.insert(joined.end(), st->grads(a), st->grads(a) + st->arena_size(a));
    }
    const std::vector<T> g(whole.grads(a), whole.grads(a) + whole.layout().size(a));
    EXPECT_EQ(joined, g) << arena_name(a) << " gradients";
    double norm = 0;
    for (T x : g) norm += (double)x * x;
    EXPECT_GT(norm, 0) << "the comparison must see gradients";
  }
  // the counts of the last micro-batch, each stage's own layers'
  std::vector<int64_t> counts(whole.expert_counts().size(), 0);
  for (auto& st : stages) {
    const auto c = st->expert_counts();
    for (size_t j = 0; j < c.size(); ++j) counts[j] += c[j];
  }
  EXPECT_EQ(counts, whole.expert_counts());
}

}  // namespace

TEST(PipelineStage, TwoStagesEqualTheWholeModelFp64) { expect_stages_equal_whole<double>({0, 2, 4}, 3); }
TEST(PipelineStage, FourStagesEqualTheWholeModelFp32) { expect_stages_equal_whole<float>({0, 1, 2, 3, 4}, 2); }
TEST(PipelineStage, UnevenStagesEqualTheWholeModelFp32) { expect_stages_equal_whole<float>({0, 1, 4}, 1); }

TEST(PipelineStage, StageHoldsOnlyItsLayers) {
  const ModelConfig mc = four_layers();
  ModelMemory first, last;
  first.layer_end = 2;
  last.layer_begin = 2;
  MoeModel<float> whole(mc, 2, mc.seq_len), a(mc, 2, mc.seq_len, first), b(mc, 2, mc.seq_len, last);
  for (Arena ar : {Arena::BACKBONE, Arena::EXPERTS}) {
    EXPECT_EQ(a.arena_size(ar) + b.arena_size(ar), whole.arena_size(ar));
    EXPECT_LT(a.arena_size(ar), whole.arena_size(ar));
    EXPECT_GT(b.arena_size(ar), 0u);
  }
  // what a slot adds (a micro-batch in flight): the stages' together are the whole model's
  // (the first stage's output is one buffer for all its slots, read right after each forward;
  // the second stage's input is the whole model's layer input)
  auto per_slot = [&](ModelMemory m) {
    const size_t one = MoeModel<float>::activation_bytes(mc, 2, mc.seq_len, m);
    m.slots = 2;
    return MoeModel<float>::activation_bytes(mc, 2, mc.seq_len, m) - one;
  };
  EXPECT_EQ(per_slot(first) + per_slot(last), per_slot(ModelMemory{}));
  EXPECT_LT(per_slot(first), per_slot(ModelMemory{}));
}

TEST(PipelineSchedule, OneFOneBRunsEveryMicroBatchOnceInOrder) {
  for (int P : {1, 2, 4})
    for (int M : {1, 2, 3, 8})
      for (int s = 0; s < P; ++s) {
        const auto ops = one_f_one_b(s, P, M);
        ASSERT_EQ(ops.size(), 2u * M);
        int next_f = 0, next_b = 0, in_flight = 0, most = 0;
        for (const PipelineOp& op : ops) {
          if (op.forward) {
            EXPECT_EQ(op.micro, next_f++);
            most = std::max(most, ++in_flight);
          } else {
            EXPECT_EQ(op.micro, next_b++);
            EXPECT_LT(op.micro, next_f) << "a backward after its forward";
            --in_flight;
          }
        }
        EXPECT_EQ(most, pipeline_slots(s, P, M)) << "P " << P << " M " << M << " stage " << s;
        EXPECT_EQ(most, std::min(P - s, M));
      }
  // stage 0 of 4 with 8 micro-batches: 3 warm-up forwards, then alternating
  const auto ops = one_f_one_b(0, 4, 8);
  EXPECT_TRUE(ops[0].forward && ops[1].forward && ops[2].forward && ops[3].forward);
  EXPECT_FALSE(ops[4].forward);
  EXPECT_EQ(ops[4].micro, 0);
}
