// `parallax plan`: the traffic it predicts is what the counted MPI layer measures
// (MpiTrain.SyncerEqualsAllreduceAndBytesAreExact checks the same formulas on real runs).
#include <gtest/gtest.h>

#include "config/config.hpp"
#include "model/param_layout.hpp"
#include "parallel/comm.hpp"
#include "sync/outer_sync.hpp"
#include "model/full_view.hpp"     // defines: full_expert_wire_bytes
#include "model/ternary_view.hpp"  // defines: ternary_expert_wire_bytes
#include "model/moe_model.hpp"  // defines: MoeModel::activation_bytes
#include "train/plan.hpp"

using namespace px;

namespace {
Config tiny(std::vector<std::string> ov) {
  ov.push_back("data.dir=unused");
  return load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml", ov);
}
}  // namespace

TEST(Plan, DilocoSyncerAndSyncTraffic) {
  const Config c = tiny({"train.mode=\"diloco\"", "topology.islands=4", "topology.syncers=1",
                         "sync.backbone_sync=\"syncer\"", "sync.backbone_every=5"});
  const Plan p = make_plan(c);
  const ParamLayout layout(c.model);
  const double P = (double)(layout.backbone_size + layout.experts_size);
  EXPECT_EQ(p.params_total, (int64_t)P);
  ASSERT_EQ(p.roles.size(), 2u);
  EXPECT_DOUBLE_EQ(p.roles[0].bytes_per_step[(int)Tier::BACKBONE], (sizeof(PushHeader) + 4 * P) / 5);
  EXPECT_DOUBLE_EQ(p.roles[1].bytes_per_step[(int)Tier::BACKBONE], 4 * P * 4 / 5);
  EXPECT_DOUBLE_EQ(p.roles[0].param_bytes, 4 * P);

  const Config s = tiny({"topology.islands=4"});
  const Plan q = make_plan(s);
  EXPECT_DOUBLE_EQ(q.roles[0].bytes_per_step[(int)Tier::ISLAND],
                   (double)ring_allreduce_bytes(4 * (int64_t)layout.backbone_size, 4));
  EXPECT_GT(q.roles[0].bytes_per_step[(int)Tier::EXPERT_PARALLEL], 0);
  // sync: every rank's model holds every expert (weights, gradients); AdamW covers its quarter
  EXPECT_DOUBLE_EQ(q.roles[0].param_bytes, 4.0 * (layout.backbone_size + layout.experts_size));
  EXPECT_DOUBLE_EQ(q.roles[0].optim_bytes, 8 * (layout.backbone_size + layout.experts_size / 4.0));
  EXPECT_GT(q.roles[0].act_bytes, 0);
  EXPECT_GT(q.train_flops_per_token, 6.0 * q.params_active);
}

// Mode parallax: the view and adapter traffic the plan predicts is the formula the MPI tests
// measure exactly (MpiParallax.*CountsSnapshotsExactly / *CountsBytes*), the backbone syncs
// without the experts, and a learner holds compact views instead of the experts arena.
TEST(Plan, ParallaxTrafficAndMemory) {
  const Config c = tiny({"train.mode=\"parallax\"", "topology.islands=2", "sync.backbone_every=5",
                         "experts.snapshot_every=10"});
  const Plan p = make_plan(c);
  const ParamLayout layout(c.model);
  const ModelConfig& m = c.model;
  const double ME = (double)m.moe_layers() * m.n_experts, NL = 2;
  const double view = 12.0 + (double)ternary_expert_wire_bytes(cpu::EXPERT_ACT_SWIGLU, m.d_model, m.expert_hidden);
  ASSERT_EQ(p.roles.size(), 1u);
  EXPECT_DOUBLE_EQ(p.roles[0].bytes_per_step[(int)Tier::SNAPSHOT], (4.0 + ME / NL * view) * (NL - 1) / 10);
  EXPECT_DOUBLE_EQ(p.roles[0].bytes_per_step[(int)Tier::BACKBONE], (double)ring_allreduce_bytes(4 * (int64_t)layout.backbone_size, 2) / 5);
  EXPECT_GT(p.roles[0].bytes_per_step[(int)Tier::SKETCH], 0);
  // backbone + my half of the masters + 2-bit views (and a scale per output unit) of the rest
  const double d = m.d_model, h = m.expert_hidden;
  EXPECT_DOUBLE_EQ(p.roles[0].param_bytes, 4.0 * layout.backbone_size + 4.0 * layout.experts_size / NL +
                                               ME / NL * (3 * d * h / 4 + 4 * (2 * h + d)));
  EXPECT_LT(p.roles[0].param_bytes, 4.0 * (layout.backbone_size + layout.experts_size));
  EXPECT_DOUBLE_EQ(p.roles[0].outer_bytes, 8.0 * layout.backbone_size);

  const Config a = tiny({"train.mode=\"parallax\"", "topology.islands=2", "topology.expert_workers=1",
                         "experts.signal=\"adapters\"", "experts.adapter_rank=4", "experts.adapter_every=5"});
  const Plan q = make_plan(a);
  ASSERT_EQ(q.roles.size(), 2u);
  EXPECT_EQ(q.roles[1].role, "expert worker");
  EXPECT_DOUBLE_EQ(q.roles[0].bytes_per_step[(int)Tier::ADAPTER],
                   (ME * (20.0 + 4.0 * 4 * 3 * (m.d_model + m.expert_hidden)) + 4.0) / 5);
  EXPECT_EQ(q.roles[0].bytes_per_step[(int)Tier::SKETCH], 0);
  EXPECT_DOUBLE_EQ(q.roles[1].param_bytes, 4.0 * layout.experts_size);
}

// View "full": a learner holds every expert it does not home as fp32 weights, and with signal
// "none" (the SPES-style baseline) the homes still send their snapshots (tier snapshot, at the
// full wire size) while no sketch is sent; the frozen-experts baseline (signal "none", view
// "ternary") sends none.
TEST(Plan, FullViewsMemoryAndSpesTraffic) {
  const Config c = tiny({"train.mode=\"parallax\"", "topology.islands=4", "experts.view=\"full\"",
                         "experts.signal=\"none\"", "experts.snapshot_every=10"});
  const Plan p = make_plan(c);
  const ParamLayout layout(c.model);
  const ModelConfig& m = c.model;
  const double ME = (double)m.moe_layers() * m.n_experts, NL = 4, d = m.d_model, h = m.expert_hidden;
  ASSERT_EQ(p.roles.size(), 1u);
  // backbone + my quarter of the masters + fp32 copies of the other three quarters
  EXPECT_DOUBLE_EQ(p.roles[0].param_bytes, 4.0 * layout.backbone_size + 4.0 * layout.experts_size / NL +
                                               ME * (NL - 1) / NL * 4 * 3 * d * h);
  EXPECT_DOUBLE_EQ(p.roles[0].param_bytes, 4.0 * (layout.backbone_size + layout.experts_size));
  const double view = 12.0 + (double)full_expert_wire_bytes(cpu::EXPERT_ACT_SWIGLU, m.d_model, m.expert_hidden);
  EXPECT_DOUBLE_EQ(p.roles[0].bytes_per_step[(int)Tier::SNAPSHOT], (4.0 + ME / NL * view) * (NL - 1) / 10);
  EXPECT_EQ(p.roles[0].bytes_per_step[(int)Tier::SKETCH], 0);

  Config frozen = c;
  frozen.experts.view = ViewKind::TERNARY;
  EXPECT_EQ(make_plan(frozen).roles[0].bytes_per_step[(int)Tier::SNAPSHOT], 0);
  EXPECT_LT(make_plan(frozen).roles[0].param_bytes, p.roles[0].param_bytes);
  Config sketches = c;  // the upper-bound row: sketches from every island and full views
  sketches.experts.signal = ExpertSignalKind::SKETCHES;
  EXPECT_GT(make_plan(sketches).roles[0].bytes_per_step[(int)Tier::SKETCH], 0);
  EXPECT_DOUBLE_EQ(make_plan(sketches).roles[0].bytes_per_step[(int)Tier::SNAPSHOT],
                   p.roles[0].bytes_per_step[(int)Tier::SNAPSHOT]);
}

// train.micro_batches: a learner holds the activations of one micro-batch; sketches go per
// micro-batch with ceil(tokens / M) rows each.
TEST(Plan, MicroBatchesHoldOneMicroBatchOfActivations) {
  const Config whole = tiny({"train.batch_size=8"});
  const Config micro = tiny({"train.batch_size=8", "train.micro_batches=4"});
  EXPECT_DOUBLE_EQ(make_plan(micro).roles[0].act_bytes,
                   (double)MoeModel<float>::activation_bytes(micro.model, 2, micro.model.seq_len));
  EXPECT_LT(make_plan(micro).roles[0].act_bytes, 0.3 * make_plan(whole).roles[0].act_bytes);
  EXPECT_DOUBLE_EQ(make_plan(micro).roles[0].param_bytes, make_plan(whole).roles[0].param_bytes);
}
