// GPUs in every mode (issue: GPU in every mode and role; modes parallax and expert-parallel sync
// with their routed experts on the host, rows staged per MoE layer): a 1-5 rank run
// with train.device = "cuda" (all ranks on the visible GPUs, round robin) against the CPU run of
// the same config: losses and evaluations within bf16 tolerance over 20 steps, the same bytes
// per tier (control aside: NCCL's id broadcast), the gradient sum over NCCL and host-staged
// MPI, a GPU checkpoint resumed on the CPU and a CPU one on the GPU. Skips without a CUDA build and a visible GPU
// (CI); runs on a lent GPU (scripts/device_check.sh).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdlib>

#include "backend/gpu_step.hpp"  // defines: GpuStepper::require
#include "parallel/comm.hpp"     // defines: Tier

#include "mpi_train_util.hpp"  // defines: world_rank, shared_dir, tiny, run

using namespace px;
using namespace px::test;

namespace {

bool gpu_visible() {
  int ok = 1;
  try {
    GpuStepper::require();
  } catch (const std::exception&) {
    ok = 0;
  }
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return ok == 1;
}

struct GpuCase {
  const char* name;
  int ranks;
  bool nccl;  // the gradient sum over NCCL (where built), else host-staged MPI
  std::vector<std::string> overrides;
  std::vector<std::string> gpu_only = {};  // also for the GPU run (the CPU run's home is on the CPU)
};
std::string case_name(const ::testing::TestParamInfo<GpuCase>& info) { return info.param.name; }
void PrintTo(const GpuCase& c, std::ostream* os) { *os << c.name; }

// bf16 GEMMs against fp32 ones over 20 steps of a tiny model
constexpr double kAbs = 0.05, kRel = 0.02;
bool close(double cpu, double gpu) { return std::abs(cpu - gpu) <= kAbs + kRel * std::abs(cpu); }

}  // namespace

class GpuBackend : public ::testing::TestWithParam<GpuCase> {};

TEST_P(GpuBackend, MatchesTheCpuRunToBf16ToleranceWithTheSameBytesPerTier) {
  if (!gpu_visible()) GTEST_SKIP() << "no CUDA build or no visible GPU: runs on a lent GPU";
  const GpuCase& c = GetParam();
  setenv("PARALLAX_NCCL", c.nccl ? "1" : "0", 1);
  std::vector<std::string> ov = {"train.steps=20", "data.eval_every=10", "checkpoint.every=0",
                                 "model.n_heads=2"};  // head_dim 32 (the GPU's attention)
  ov.insert(ov.end(), c.overrides.begin(), c.overrides.end());
  const Config cpu = tiny(ov);
  ov.push_back("train.device=\"cuda\"");
  ov.insert(ov.end(), c.gpu_only.begin(), c.gpu_only.end());
  const Config gpu = tiny(ov);
  const std::string tag = std::string("gpu_") + c.name;
  const TrainResult a = run(c.ranks, cpu, shared_dir(tag + "_cpu"));
  const TrainResult b = run(c.ranks, gpu, shared_dir(tag + "_gpu"));
  // a GPU checkpoint (step 10) resumed on the CPU, and a CPU one on the GPU
  const std::string part = shared_dir(tag + "_part"), back = shared_dir(tag + "_back");
  run(c.ranks, gpu, part, 10);
  const TrainResult rest = run(c.ranks, cpu, part, -1, true);
  run(c.ranks, cpu, back, 10);
  const TrainResult rest_gpu = run(c.ranks, gpu, back, -1, true);
  if (world_rank() != 0) return;
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i)
    EXPECT_TRUE(close(a.losses[i], b.losses[i]))
        << "step " << i + 1 << ": cpu " << a.losses[i] << " gpu " << b.losses[i];
  ASSERT_EQ(a.evals.size(), b.evals.size());
  for (size_t i = 0; i < a.evals.size(); ++i)
    EXPECT_TRUE(close(a.evals[i].second, b.evals[i].second))
        << "eval at step " << a.evals[i].first << ": cpu " << a.evals[i].second << " gpu "
        << b.evals[i].second;
  ASSERT_EQ(a.comm_bytes.size(), b.comm_bytes.size());
  for (int t = 0; t < kTierCount; ++t)
    if (t != (int)Tier::CONTROL) EXPECT_EQ(a.comm_bytes[t], b.comm_bytes[t]) << tier_name((Tier)t);
  ASSERT_EQ(rest.losses.size(), 10u);
  ASSERT_EQ(rest_gpu.losses.size(), 10u);
  for (size_t i = 0; i < rest.losses.size(); ++i) {
    EXPECT_TRUE(close(b.losses[10 + i], rest.losses[i]))
        << "GPU checkpoint resumed on the CPU, step " << 11 + i << ": gpu " << b.losses[10 + i]
        << " cpu " << rest.losses[i];
    EXPECT_TRUE(close(a.losses[10 + i], rest_gpu.losses[i]))
        << "CPU checkpoint resumed on the GPU, step " << 11 + i << ": cpu " << a.losses[10 + i]
        << " gpu " << rest_gpu.losses[i];
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, GpuBackend,
    ::testing::Values(
        GpuCase{"sync_one_learner", 1, true, {}},
        GpuCase{"sync_expert_parallel", 4, true, {"topology.islands=4"}},
        GpuCase{"diloco_islands_of_two_nccl", 4, true,
                {"train.mode=\"diloco\"", "topology.islands=2", "topology.ranks_per_island=2",
                 "sync.backbone_every=5"}},
        GpuCase{"diloco_islands_of_two_host_staged", 4, false,
                {"train.mode=\"diloco\"", "topology.islands=2", "topology.ranks_per_island=2",
                 "sync.backbone_every=5"}},
        GpuCase{"diloco_syncer_fragments_int8", 5, true,
                {"train.mode=\"diloco\"", "topology.islands=2", "topology.ranks_per_island=2",
                 "topology.syncers=1", "sync.backbone_sync=\"syncer\"", "sync.backbone_every=5",
                 "sync.fragments=2", "sync.outer_dtype=\"int8\""}},
        GpuCase{"parallax_sketches", 4, true,
                {"train.mode=\"parallax\"", "topology.islands=2", "topology.ranks_per_island=2",
                 "sync.backbone_every=5", "experts.snapshot_every=3"}},
        GpuCase{"parallax_expert_worker", 3, true,
                {"train.mode=\"parallax\"", "topology.islands=2", "topology.expert_workers=1",
                 "sync.backbone_every=5", "experts.snapshot_every=3"}},
        // a GPU expert worker (its home on the GPU: sketch gradients and AdamW there)
        GpuCase{"parallax_gpu_expert_worker", 3, true,
                {"train.mode=\"parallax\"", "topology.islands=2", "topology.expert_workers=1",
                 "sync.backbone_every=5", "experts.snapshot_every=3"},
                {"experts.home_device=\"cuda\""}}),
    case_name);
