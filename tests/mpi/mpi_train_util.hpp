#pragma once
// Helpers of the multi-rank training tests (tests/mpi/test_mpi_train.cpp, test_mpi_parallax.cpp,
// test_mpi_spes.cpp): a shared folder and corpus, the tiny config with overrides, train() on the
// first k world ranks (the others idle at a barrier), a bit-identical resume check.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "data/prepare.hpp"
#include "train/trainer.hpp"

namespace px::test {

// The build's folders and the corpus, overridable from the environment for a test binary run
// away from its build (scripts/device_check.sh on a GPU machine): PX_TEST_SOURCE_DIR (holds
// experiments/tiny.toml), PX_TEST_BINARY_DIR (test_tmp/ goes there), PX_TEST_FORTUNES.
inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}
inline std::string source_dir() { return env_or("PX_TEST_SOURCE_DIR", PX_SOURCE_DIR); }
inline std::string binary_dir() { return env_or("PX_TEST_BINARY_DIR", PX_BINARY_DIR); }

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// A folder name shared by all ranks.
inline std::string shared_dir(const std::string& name) {
  long id = world_rank() == 0 ? (long)::getpid() : 0;
  MPI_Bcast(&id, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  return binary_dir() + "/test_tmp/mpi_" + name + "_" + std::to_string(id);
}

inline const std::string& corpus() {
  static const std::string dir = [] {
    const std::string d = shared_dir("corpus");
    if (world_rank() == 0) data_prepare({env_or("PX_TEST_FORTUNES", "/usr/share/games/fortunes")}, d, 512);
    MPI_Barrier(MPI_COMM_WORLD);
    return d;
  }();
  return dir;
}

// The first n world ranks (MPI_COMM_NULL on the others). Caller frees.
inline MPI_Comm first_ranks(int n) {
  MPI_Comm c;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank() < n ? 0 : MPI_UNDEFINED, world_rank(), &c);
  return c;
}

inline Config tiny(std::vector<std::string> ov) {
  ov.insert(ov.begin(), {"data.dir=" + corpus(), "train.warmup_steps=2"});
  ov.push_back("data.eval_batches=2");
  return load_config(source_dir() + "/experiments/tiny.toml", ov);
}

// Runs train() on the first `ranks` world ranks; returns the result there (empty elsewhere).
inline TrainResult run(int ranks, const Config& cfg, const std::string& dir, int64_t stop_after = -1,
                bool resume = false) {
  MPI_Comm c = first_ranks(ranks);
  TrainResult r;
  if (c != MPI_COMM_NULL) {
    TrainOptions o;
    o.run_dir = dir;
    o.quiet = true;
    o.world = c;
    o.stop_after = stop_after;
    o.resume = resume;
    r = train(cfg, o);
    MPI_Comm_free(&c);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return r;
}

// Runs cfg on `ranks` ranks uninterrupted (returned) and again stopped after `stop` steps and
// resumed; on rank 0, checks the resumed losses and last eval equal the uninterrupted run's.
inline TrainResult expect_bit_identical_resume(int ranks, const Config& cfg, const std::string& tag, int64_t stop) {
  const TrainResult full = run(ranks, cfg, shared_dir(tag + "_full"));
  const std::string part = shared_dir(tag + "_part");
  const TrainResult first = run(ranks, cfg, part, stop);
  const TrainResult rest = run(ranks, cfg, part, -1, true);
  if (world_rank() == 0) {
    EXPECT_EQ(first.end_step, stop);
    EXPECT_EQ(rest.start_step, stop);
    const size_t n = (size_t)(cfg.train.steps - stop);
    EXPECT_EQ(rest.losses.size(), n);
    for (size_t i = 0; i < std::min(n, rest.losses.size()); ++i)
      EXPECT_EQ(rest.losses[i], full.losses[stop + i]) << tag << " step " << stop + 1 + i;
    EXPECT_EQ(rest.evals.back().second, full.evals.back().second) << tag;
  }
  return full;
}

// The checkpoint of `step` in run folder `dir`.
inline std::string checkpoint_path(const std::string& dir, int64_t step) {
  const std::string n = std::to_string(step);
  return dir + "/checkpoints/step_" + std::string(8 - n.size(), '0') + n + ".h5";
}

inline void expect_close(const std::vector<double>& a, const std::vector<double>& b, double rel) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], rel * std::abs(b[i])) << "step " << i + 1;
}

// max |a - b| <= rel * max |b| (+ a floor for arrays near zero), over arrays that are not all 0
inline void expect_arrays_close(const std::vector<float>& a, const std::vector<float>& b, double rel,
                                const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, (double)std::abs(a[i] - b[i]));
    scale = std::max(scale, (double)std::abs(b[i]));
  }
  EXPECT_LE(diff, rel * scale + 1e-12) << what << ": max difference " << diff << ", scale " << scale;
  EXPECT_GT(scale, 0) << what << ": the comparison must see nonzero values";
}

inline std::vector<std::string> no_noise() {  // make modes comparable: linear optimizer, no clipping
  return {"train.optimizer=\"sgd\"", "train.lr=0.5", "train.min_lr=0.5", "train.warmup_steps=0",
          "train.grad_clip=0", "model.aux_alpha=0", "data.eval_every=0", "checkpoint.every=0"};
}


}  // namespace px::test
