// The learner-model seam (backend/learner_model.hpp) under every mode: the staged test backend
// computes on a private copy of the state and copies it to / from the host copy only at the
// declared sync points. A tier or checkpoint that reads or writes the host copy without its
// sync point makes the staged run differ from the CPU run, so these runs must agree bit for
// bit (losses, evaluations, bytes per tier), also across a checkpoint and resume. Wherever the
// GPU's driver runs a config (backend/device_support: diloco, one-learner sync), "staged" is
// that driver (DeviceLearner) over the staged CPU device (HostStepper), so these cases check
// the GPU learner's step (host-staged gradient sum, counts, norm, skip) and sync points too;
// experts.home_device = "staged" does the same for the expert homes' device seam.
#include <gtest/gtest.h>
#include <mpi.h>

#include "parallel/comm.hpp"   // defines: Tier

#include "mpi_train_util.hpp"  // defines: world_rank, shared_dir, tiny, run

using namespace px;
using namespace px::test;

namespace {

struct ModeCase {
  const char* name;
  int ranks;
  std::vector<std::string> overrides;
  std::vector<std::string> staged_only = {};  // also staged: e.g. the expert homes' device
  // the staged device's "device-side" gradient all-reduce (DeviceLearner's NCCL branch)
  bool device_group = false;
};

std::string case_name(const ::testing::TestParamInfo<ModeCase>& info) { return info.param.name; }
void PrintTo(const ModeCase& c, std::ostream* os) { *os << c.name; }

void expect_same_run(const TrainResult& cpu, const TrainResult& staged, const std::string& what) {
  ASSERT_EQ(cpu.losses.size(), staged.losses.size()) << what;
  for (size_t i = 0; i < cpu.losses.size(); ++i)
    ASSERT_EQ(cpu.losses[i], staged.losses[i]) << what << ": step " << i + 1;
  ASSERT_EQ(cpu.evals, staged.evals) << what;
  ASSERT_EQ(cpu.comm_bytes, staged.comm_bytes) << what;
}

}  // namespace

class StagedBackend : public ::testing::TestWithParam<ModeCase> {};

TEST_P(StagedBackend, EqualsTheCpuBackendBitForBitAlsoAcrossAResume) {
  const ModeCase& c = GetParam();
  // (a clip that binds: the global gradient norm, summed over ranks and arenas, moves the
  // losses, so a wrong norm shows)
  std::vector<std::string> ov = {"train.steps=12", "data.eval_every=6", "checkpoint.every=0",
                                 "model.balance=\"bias\"", "train.grad_clip=0.05"};
  ov.insert(ov.end(), c.overrides.begin(), c.overrides.end());
  const Config cpu = tiny(ov);
  ov.push_back("train.device=\"staged\"");
  ov.insert(ov.end(), c.staged_only.begin(), c.staged_only.end());
  const Config staged = tiny(ov);
  const std::string tag = std::string("staged_") + c.name;
  const TrainResult a = run(c.ranks, cpu, shared_dir(tag + "_cpu"));
  if (c.device_group) setenv("PARALLAX_STAGED_DEVICE_GROUP", "1", 1);
  const TrainResult b = run(c.ranks, staged, shared_dir(tag + "_staged"));
  // stop after 5 steps (a checkpoint), resume: the state goes host -> file -> device
  const std::string part = shared_dir(tag + "_part");
  run(c.ranks, staged, part, 5);
  const TrainResult rest = run(c.ranks, staged, part, -1, true);
  unsetenv("PARALLAX_STAGED_DEVICE_GROUP");
  if (world_rank() != 0) return;
  expect_same_run(a, b, "staged vs cpu");
  ASSERT_EQ(rest.losses.size(), 7u);
  for (size_t i = 0; i < rest.losses.size(); ++i)
    EXPECT_EQ(rest.losses[i], a.losses[5 + i]) << "resumed staged run, step " << 6 + i;
  EXPECT_EQ(rest.evals.back(), a.evals.back());
}

INSTANTIATE_TEST_SUITE_P(
    Modes, StagedBackend,
    ::testing::Values(
        ModeCase{"sync_expert_parallel", 4, {"topology.islands=4"}},
        ModeCase{"diloco_fragments_int8", 4,
                 {"train.mode=\"diloco\"", "topology.islands=2", "topology.ranks_per_island=2",
                  "sync.backbone_every=4", "sync.fragments=2", "sync.outer_dtype=\"int8\""}},
        ModeCase{"diloco_hierarchical", 4,
                 {"train.mode=\"diloco\"", "topology.islands=2", "topology.ranks_per_island=2",
                  "sync.backbone_every=4", "sync.island_every=2"}},
        ModeCase{"diloco_syncer_mix", 5,
                 {"train.mode=\"diloco\"", "topology.islands=4", "topology.syncers=1",
                  "sync.backbone_sync=\"syncer\"", "sync.backbone_every=4", "sync.mix_alpha=0.5"}},
        ModeCase{"diloco_syncer_islands_of_two", 5,
                 {"train.mode=\"diloco\"", "topology.islands=2", "topology.ranks_per_island=2",
                  "topology.syncers=1", "sync.backbone_sync=\"syncer\"", "sync.backbone_every=4",
                  "sync.fragments=2"}},
        ModeCase{"sync_one_learner", 1, {}},
        ModeCase{"sync_expert_parallel_device_group", 4, {"topology.islands=4"}, {}, true},
        ModeCase{"diloco_islands_of_two_device_group", 4,
                 {"train.mode=\"diloco\"", "topology.islands=2", "topology.ranks_per_island=2",
                  "sync.backbone_every=4"}, {}, true},
        ModeCase{"parallax_sketches", 4,
                 {"train.mode=\"parallax\"", "topology.islands=2", "topology.ranks_per_island=2",
                  "sync.backbone_every=4", "experts.snapshot_every=3"}},
        ModeCase{"parallax_worker_adapters", 3,
                 {"train.mode=\"parallax\"", "topology.islands=2", "topology.expert_workers=1",
                  "sync.backbone_every=4", "experts.signal=\"adapters\"", "experts.adapter_rank=4",
                  "experts.adapter_every=3", "experts.snapshot_every=3"}},
        // the expert homes' device seam (experts/home_device.hpp): a worker's home, and homes
        // on the learners (their own exact gradients added on the device)
        ModeCase{"parallax_worker_home_device", 3,
                 {"train.mode=\"parallax\"", "topology.islands=2", "topology.expert_workers=1",
                  "sync.backbone_every=4", "experts.snapshot_every=3"},
                 {"experts.home_device=\"staged\""}},
        ModeCase{"parallax_learner_homes_device_lowrank", 4,
                 {"train.mode=\"parallax\"", "topology.islands=2", "topology.ranks_per_island=2",
                  "sync.backbone_every=4", "experts.view=\"lowrank\"", "experts.surrogate_every=3"},
                 {"experts.home_device=\"staged\""}}),
    case_name);
