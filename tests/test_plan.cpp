// `parallax plan`: the traffic it predicts is what the counted MPI layer measures
// (MpiTrain.SyncerEqualsAllreduceAndBytesAreExact checks the same formulas on real runs).
#include <gtest/gtest.h>

#include "config/config.hpp"
#include "model/param_layout.hpp"
#include "parallel/comm.hpp"
#include "sync/outer_sync.hpp"
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
  const ParamLayout L(c.model);
  const double P = (double)(L.backbone_size + L.experts_size);
  EXPECT_EQ(p.params_total, (int64_t)P);
  ASSERT_EQ(p.roles.size(), 2u);
  EXPECT_DOUBLE_EQ(p.roles[0].bytes_per_step[(int)Tier::BACKBONE], (sizeof(PushHeader) + 4 * P) / 5);
  EXPECT_DOUBLE_EQ(p.roles[1].bytes_per_step[(int)Tier::BACKBONE], 4 * P * 4 / 5);
  EXPECT_DOUBLE_EQ(p.roles[0].param_bytes, 4 * P);

  const Config s = tiny({"topology.islands=4"});
  const Plan q = make_plan(s);
  EXPECT_DOUBLE_EQ(q.roles[0].bytes_per_step[(int)Tier::ISLAND],
                   (double)ring_allreduce_bytes(4 * (int64_t)L.backbone_size, 4));
  EXPECT_GT(q.roles[0].bytes_per_step[(int)Tier::EXPERT_PARALLEL], 0);
  // sync shards the experts: a rank holds a quarter of them
  EXPECT_DOUBLE_EQ(q.roles[0].param_bytes, 4 * (L.backbone_size + L.experts_size / 4.0));
  EXPECT_GT(q.roles[0].act_bytes, 0);
  EXPECT_GT(q.train_flops_per_token, 6.0 * q.params_active);
}
