// Parallel-HDF5 checkpoints (one rank here): round trip, and a flipped byte in the data is
// caught by the per-dataset checksum as a UserError naming the file and the dataset.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "io/checkpoint_parallel.hpp"
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
