// Which GPU a rank takes (backend/local_device): the node-local rank from the launcher's
// environment (Open MPI, then Slurm, then MPICH), modulo the visible devices.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "backend/local_device.hpp"

namespace {

int local_rank(const std::map<std::string, std::string>& env) {
  return px::local_rank_from_env([&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

}  // namespace

TEST(LocalDevice, LocalRankFromTheLaunchersEnvironment) {
  EXPECT_EQ(local_rank({}), 0);
  EXPECT_EQ(local_rank({{"OMPI_COMM_WORLD_LOCAL_RANK", "3"}}), 3);
  EXPECT_EQ(local_rank({{"SLURM_LOCALID", "5"}}), 5);
  EXPECT_EQ(local_rank({{"MPI_LOCALRANKID", "2"}}), 2);
  // Open MPI's wins over Slurm's (mpirun inside an allocation), Slurm's over MPICH's
  EXPECT_EQ(local_rank({{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"SLURM_LOCALID", "6"}}), 1);
  EXPECT_EQ(local_rank({{"SLURM_LOCALID", "6"}, {"MPI_LOCALRANKID", "4"}}), 6);
  // malformed or empty values are skipped
  EXPECT_EQ(local_rank({{"OMPI_COMM_WORLD_LOCAL_RANK", "x1"}, {"SLURM_LOCALID", "2"}}), 2);
  EXPECT_EQ(local_rank({{"OMPI_COMM_WORLD_LOCAL_RANK", ""}}), 0);
  EXPECT_EQ(local_rank({{"SLURM_LOCALID", "-1"}}), 0);
}

TEST(LocalDevice, RanksShareTheVisibleDevicesRoundRobin) {
  EXPECT_EQ(px::device_for_local_rank(0, 8), 0);
  EXPECT_EQ(px::device_for_local_rank(7, 8), 7);
  EXPECT_EQ(px::device_for_local_rank(9, 8), 1);
  EXPECT_EQ(px::device_for_local_rank(3, 1), 0);  // several ranks on one GPU
}
