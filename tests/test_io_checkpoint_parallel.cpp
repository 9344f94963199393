// Parallel-HDF5 checkpoints (one rank here): round trip, and a flipped byte in the data is
// caught by the per-dataset checksum as a UserError naming the file and the dataset; a file that
// does not fit is a UserError naming the file and the reason, and leaves no file behind.
#include <gtest/gtest.h>
#include <mpi.h>

#include <sys/resource.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "io/checkpoint_parallel.hpp"
#include "io/checkpoint_room.hpp"  // defines: checkpoint_room_problem, write_error_reason
#include "temp_dir.hpp"
#include "util/errors.hpp"

using namespace px;

TEST(CheckpointParallel, RoundTripAndBitFlip) {
  px::test::TempDir dir;
  const std::string path = dir / "step_00000001.h5";
  std::vector<float> a(4096);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.5f + (float)i;  // distinctive, never zero
  const std::vector<int64_t> b = {7, -3, 1LL << 40};
  ParallelCheckpointWriter w;
  w.add("params/backbone", std::span<const float>(a));
  w.add("state/misc", std::span<const int64_t>(b));
  w.commit(MPI_COMM_SELF, path, {{"config", "x = 1"}}, 1);
  EXPECT_EQ(read_rank_array<float>(path, 0, "params/backbone", a.size()), a);
  EXPECT_EQ(read_rank_array<int64_t>(path, 0, "state/misc", 3), b);
  EXPECT_EQ(checkpoint_attr(path, "config"), "x = 1");
  EXPECT_EQ(checkpoint_world_size(path), 1);
  EXPECT_THROW(read_rank_array<float>(path, 0, "params/backbone", 10), UserError);  // wrong size
  EXPECT_THROW(read_rank_array<float>(path, 0, "params/none", 1), UserError);

  // flip one byte inside the float data (find it by its bit pattern)
  std::vector<char> bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  const float probe = a[1000];
  size_t at = std::string::npos;
  for (size_t i = 0; i + 4 <= bytes.size(); ++i)
    if (std::memcmp(bytes.data() + i, &probe, 4) == 0) at = i;
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] ^= 0x10;
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), (std::streamsize)bytes.size());
  }
  try {
    read_rank_array<float>(path, 0, "params/backbone", a.size());
    FAIL() << "a flipped byte was not detected";
  } catch (const UserError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find("checksum"), std::string::npos) << m;
  }
}

TEST(CheckpointParallel, NoRoomIsAUserErrorAndLeavesNoFile) {
  px::test::TempDir dir;
  const std::string path = dir / "step_00000002.h5";
  const std::vector<float> a(1 << 20, 1.f);  // 4 MiB
  ParallelCheckpointWriter w;
  w.add("params/backbone", std::span<const float>(a));
  // under a 1 MiB file-size limit (SIGXFSZ ignored, as the fault test does): refused up front
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  rlimit small = old;
  small.rlim_cur = 1 << 20;
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    w.commit(MPI_COMM_SELF, path, {{"config", "x = 1"}}, 2);
  } catch (const UserError& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find(path + " not written"), std::string::npos) << message;
  EXPECT_NE(message.find("file-size limit of 1048576"), std::string::npos) << message;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path)) << "a file was left";
  // more than any disk has free; the reasons of a full disk say so
  EXPECT_NE(checkpoint_room_problem(dir.path.string(), 1ull << 62, true).find("the disk is full"), std::string::npos);
  EXPECT_EQ(checkpoint_room_problem(dir.path.string(), 1 << 20, true), "");
  EXPECT_NE(write_error_reason(ENOSPC).find("(the disk is full"), std::string::npos);
  EXPECT_EQ(write_error_reason(EACCES), std::strerror(EACCES));
  // with the limit lifted the same writer commits
  w.commit(MPI_COMM_SELF, path, {{"config", "x = 1"}}, 2);
  EXPECT_EQ(read_rank_array<float>(path, 0, "params/backbone", a.size()), a);
}
