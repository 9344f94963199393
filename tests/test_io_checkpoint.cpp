// Checkpoint files: round trip, count and type checks, corrupted / truncated / garbage files,
// .tmp handling, newest_checkpoint and prune_checkpoints.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "io/checkpoint_file.hpp"
#include "util/errors.hpp"

namespace fs = std::filesystem;
using px::CheckpointReader;
using px::CheckpointWriter;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("px_test_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

template <class Fn>
void expect_user_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a UserError";
  } catch (const px::UserError& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  }
}

// A checkpoint with a 1 MiB float array (several chunks) and a few small ones.
void write_sample(const std::string& path, int64_t step) {
  std::vector<float> params(1 << 18);
  std::iota(params.begin(), params.end(), 0.5f);
  std::vector<double> m = {1.5, -2.25, 3.0};
  std::vector<int32_t> cursor = {7, 8};
  std::vector<int64_t> counts = {-1, int64_t(1) << 40};
  std::vector<uint64_t> rng = {0xdeadbeefcafef00dull, 42};
  CheckpointWriter w;
  w.add("params/backbone", std::span<const float>(params), {512, 512});
  w.add("optim/m", std::span<const double>(m));
  w.add("data/cursor", std::span<const int32_t>(cursor));
  w.add("stats/counts", std::span<const int64_t>(counts));
  w.add("rng/state", std::span<const uint64_t>(rng));
  w.set_attr("config", std::string("[model]\nd_model = 64\n"));
  w.set_attr("step", step);
  w.commit(path);
}

}  // namespace

TEST(Checkpoint, RoundTrip) {
  fs::path d = temp_dir("roundtrip");
  const std::string path = px::checkpoint_path((d / "checkpoints").string(), 100);
  EXPECT_EQ(fs::path(path).filename(), "step_00000100.h5");
  write_sample(path, 100);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  CheckpointReader r(path);
  EXPECT_EQ(r.attr_int("step"), 100);
  EXPECT_EQ(r.attr_string("config"), "[model]\nd_model = 64\n");
  EXPECT_EQ(r.shape("params/backbone"), (std::vector<hsize_t>{512, 512}));
  auto p = r.read<float>("params/backbone", 512 * 512);
  EXPECT_EQ(p[0], 0.5f);
  EXPECT_EQ(p.back(), 0.5f + float((1 << 18) - 1));
  EXPECT_EQ(r.read<double>("optim/m", 3), (std::vector<double>{1.5, -2.25, 3.0}));
  std::vector<int32_t> cursor(2);
  r.read_into<int32_t>("data/cursor", cursor);
  EXPECT_EQ(cursor, (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(r.read<int64_t>("stats/counts", 2)[1], int64_t(1) << 40);
  EXPECT_EQ(r.read<uint64_t>("rng/state", 2)[0], 0xdeadbeefcafef00dull);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"data/cursor", "optim/m", "params/backbone", "rng/state", "stats/counts"}));
  fs::remove_all(d);
}

TEST(Checkpoint, CountTypeAndNameMismatch) {
  fs::path d = temp_dir("mismatch");
  const std::string path = (d / "step_00000001.h5").string();
  write_sample(path, 1);
  CheckpointReader r(path);
  expect_user_error([&] { r.read<double>("optim/m", 4); }, {path, "optim/m", "3 elements", "expected 4"});
  expect_user_error([&] { r.read<float>("optim/m", 3); }, {path, "optim/m", "float64", "expected float32"});
  expect_user_error([&] { r.read<float>("params/nothing", 3); }, {path, "params/nothing"});
  expect_user_error([&] { r.attr_int("nope"); }, {path, "nope"});
  fs::remove_all(d);
}

TEST(Checkpoint, BadFilesAreUserErrors) {
  fs::path d = temp_dir("bad");
  const std::string missing = (d / "missing.h5").string();
  expect_user_error([&] { CheckpointReader r(missing); }, {missing});

  const std::string garbage = (d / "garbage.h5").string();
  std::ofstream(garbage) << std::string(4096, 'x');
  expect_user_error([&] { CheckpointReader r(garbage); }, {garbage});

  // A real checkpoint cut in half.
  const std::string cut = (d / "cut.h5").string();
  write_sample(cut, 5);
  fs::resize_file(cut, fs::file_size(cut) / 2);
  expect_user_error([&] { CheckpointReader r(cut); r.read<float>("params/backbone", 512 * 512); }, {cut});

  // A real checkpoint with flipped bytes in the middle of the parameter data: the
  // Fletcher32 checksum catches it on read.
  const std::string flipped = (d / "flipped.h5").string();
  write_sample(flipped, 5);
  {
    std::fstream f(flipped, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(fs::file_size(flipped) / 2));
    f.write("\x13\x37\x13\x37\x13\x37\x13\x37", 8);
  }
  expect_user_error([&] { CheckpointReader r(flipped); r.read<float>("params/backbone", 512 * 512); }, {flipped});

  // An HDF5 file that is not a Parallax checkpoint.
  const std::string other = (d / "other.h5").string();
  { px::h5::File f = px::h5::create_file(other); }
  expect_user_error([&] { CheckpointReader r(other); }, {other, "not a Parallax checkpoint"});
  fs::remove_all(d);
}

TEST(Checkpoint, NewestSkipsTmpAndCorrupt) {
  fs::path d = temp_dir("newest");
  EXPECT_EQ(px::newest_checkpoint((d / "none").string()), std::nullopt);
  EXPECT_EQ(px::newest_checkpoint(d.string()), std::nullopt);
  for (int64_t s : {100, 200, 300}) write_sample(px::checkpoint_path(d.string(), s), s);
  // An interrupted commit of step 400 and a corrupt step 500.
  std::ofstream(px::checkpoint_path(d.string(), 400) + ".tmp") << "partial";
  std::ofstream(px::checkpoint_path(d.string(), 500)) << "garbage";
  auto newest = px::newest_checkpoint(d.string());
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(*newest, px::checkpoint_path(d.string(), 300));
  fs::remove_all(d);
}

TEST(Checkpoint, Prune) {
  fs::path d = temp_dir("prune");
  for (int64_t s : {100, 200, 300, 400}) write_sample(px::checkpoint_path(d.string(), s), s);
  std::ofstream(px::checkpoint_path(d.string(), 500) + ".tmp") << "partial";
  std::ofstream(d / "notes.txt") << "keep me";
  px::prune_checkpoints(d.string(), 0);  // keep all, but clear the stale .tmp
  EXPECT_EQ(std::distance(fs::directory_iterator(d), fs::directory_iterator()), 5);
  px::prune_checkpoints(d.string(), 2);
  EXPECT_FALSE(fs::exists(px::checkpoint_path(d.string(), 100)));
  EXPECT_FALSE(fs::exists(px::checkpoint_path(d.string(), 200)));
  EXPECT_TRUE(fs::exists(px::checkpoint_path(d.string(), 300)));
  EXPECT_TRUE(fs::exists(px::checkpoint_path(d.string(), 400)));
  EXPECT_TRUE(fs::exists(d / "notes.txt"));
  EXPECT_FALSE(fs::exists(px::checkpoint_path(d.string(), 500) + ".tmp"));
  fs::remove_all(d);
}

TEST(Checkpoint, CommitOverwritesAndLargeAttribute) {
  fs::path d = temp_dir("overwrite");
  const std::string path = (d / "step_00000001.h5").string();
  write_sample(path, 1);
  CheckpointWriter w;
  std::vector<float> x = {1, 2, 3};
  w.add("x", std::span<const float>(x));
  w.set_attr("config", std::string(200000, 'c'));  // larger than a compact attribute (64 KiB)
  w.commit(path);
  CheckpointReader r(path);
  EXPECT_FALSE(r.has("params/backbone"));
  EXPECT_EQ(r.read<float>("x", 3), x);
  EXPECT_EQ(r.attr_string("config").size(), 200000u);
  fs::remove_all(d);
}
