// ZeRO-1 (train.zero = 1) with real ranks: every all-reduced arena is sharded over the
// data-parallel group (gradients reduce-scattered, AdamW on the rank's 1/D with moments for it
// alone, parameters all-gathered). Against the unsharded run of the same config: the losses
// and final parameters agree to fp32 rounding (the reduce-scatter sums in another order than
// the all-reduce), each rank's moments equal its slice of the unsharded moments, the island
// tier sends the same bytes, and a sharded run resumes bit-identically. (The heap it saves is
// measured per process by Plan.MatchesTheMeasuredHeap: a test process's peak spans its runs.)
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>

#include "config/config.hpp"              // defines: Config
#include "io/checkpoint_parallel.hpp"     // defines: read_rank_array
#include "model/param_layout.hpp"         // defines: ParamLayout
#include "parallel/comm.hpp"              // defines: Tier
#include "train/trainer.hpp"              // defines: train, TrainResult

#include "mpi_train_util.hpp"  // defines: world_rank, shared_dir, tiny, run, expect_close, expect_arrays_close, checkpoint_path

using namespace px;
using namespace px::test;

namespace {

// Runs cfg with zero = 0 and 1 on `ranks` ranks whose data-parallel group has D ranks; on rank
// 0 compares losses, evaluations, parameters, each shard's moments and the island bytes.
void expect_zero_follows_unsharded(const std::vector<std::string>& ov, int ranks, int D,
                                   const std::string& tag, double rel) {
  auto with = [&](const char* zero) {
    auto o = ov;
    o.insert(o.end(), {"train.steps=10", "data.eval_every=5", "checkpoint.every=10", zero});
    return tiny(o);
  };
  const Config plain = with("train.zero=0"), sharded = with("train.zero=1");
  const std::string dp = shared_dir(tag + "_zero0"), ds = shared_dir(tag + "_zero1");
  const TrainResult a = run(ranks, plain, dp);
  const TrainResult b = run(ranks, sharded, ds);
  if (world_rank() != 0) return;
  expect_close(b.losses, a.losses, rel);
  ASSERT_EQ(b.evals.size(), a.evals.size());
  EXPECT_NEAR(b.evals.back().second, a.evals.back().second, rel * a.evals.back().second);
  const ParamLayout L(plain.model);
  const size_t n = L.backbone_size;
  const std::string pa = checkpoint_path(dp, 10), pb = checkpoint_path(ds, 10);
  expect_arrays_close(read_rank_array<float>(pb, 0, "params/backbone", n),
                      read_rank_array<float>(pa, 0, "params/backbone", n), rel, tag + " backbone");
  for (int r = 0; r < D; ++r) {  // shard r of the backbone's moments, on local rank r
    const size_t lo = n * r / D, hi = n * (r + 1) / D;
    for (const char* mv : {"optim/m/backbone", "optim/v/backbone"}) {
      const auto whole = read_rank_array<float>(pa, r, mv, n);
      const auto mine = read_rank_array<float>(pb, r, mv, hi - lo);
      expect_arrays_close(mine, std::vector<float>(whole.begin() + lo, whole.begin() + hi), 10 * rel,
                          tag + " " + mv + " shard " + std::to_string(r));
    }
  }
  const int isl = (int)Tier::ISLAND;
  for (int r = 0; r < ranks; ++r) {
    const double ba = (double)a.comm_bytes[isl][r], bb = (double)b.comm_bytes[isl][r];
    EXPECT_NEAR(bb, ba, 1e-3 * ba) << tag << " island bytes of rank " << r;
  }
}

}  // namespace

// Mode sync on 4 ranks (expert parallel: the backbone is sharded, the experts stay with their
// ranks), AdamW with clipping.
TEST(MpiZero, SyncOnFourRanksFollowsTheUnshardedRun) {
  expect_zero_follows_unsharded({"topology.islands=4"}, 4, 4, "sync", 1e-4);
}

// Mode diloco, 2 islands x 2 ranks: the backbone and the replicated experts are sharded over
// the island's 2 ranks (D = 2); the outer sync reads the all-gathered parameters.
TEST(MpiZero, DilocoTwoByTwoFollowsTheUnshardedRunAndResumes) {
  const std::vector<std::string> ov = {"train.mode=\"diloco\"", "topology.islands=2",
                                       "topology.ranks_per_island=2", "sync.backbone_every=4"};
  expect_zero_follows_unsharded(ov, 4, 2, "diloco", 1e-4);
  auto o = ov;
  o.insert(o.end(), {"train.zero=1", "train.steps=8", "data.eval_every=4", "checkpoint.every=4"});
  expect_bit_identical_resume(4, tiny(o), "zero_diloco", 4);
}

// Mode parallax, 2 islands x 2 ranks: the backbone is sharded over the island; the routed
// experts stay with their homes.
TEST(MpiZero, ParallaxTwoByTwoFollowsTheUnshardedRun) {
  expect_zero_follows_unsharded({"train.mode=\"parallax\"", "topology.islands=2",
                                 "topology.ranks_per_island=2", "sync.backbone_every=4"},
                                4, 2, "parallax", 1e-3);
}
