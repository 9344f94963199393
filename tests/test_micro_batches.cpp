// Gradient accumulation (train.micro_batches, issue: scale): a step over M micro-batches of
// B / M sequences is the step over the whole batch of B: the same loss, gradient norm, expert
// counts and parameters (to fp32 rounding; the aux loss is left out because it is a product
// of batch statistics, so per micro-batch it is another function), and evaluations the same.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu_learner.hpp"
#include "config/config.hpp"
#include "parallel/comm.hpp"
#include "util/errors.hpp"

using namespace px;

namespace {

Config tiny_with(std::vector<std::string> ov) {
  ov.insert(ov.begin(), {"data.dir=unused", "model.aux_alpha=0", "train.optimizer=\"sgd\"",
                         "train.grad_clip=0"});
  return load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml", ov);
}

double max_abs_diff(const float* a, const float* b, size_t n, double* scale) {
  double m = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    m = std::max(m, (double)std::fabs(a[i] - b[i]));
    s = std::max(s, (double)std::fabs(b[i]));
  }
  *scale = s;
  return m;
}

class MicroBatches : public ::testing::TestWithParam<int> {};

TEST_P(MicroBatches, StepEqualsTheWholeBatch) {
  const int M = GetParam(), B = 8;
  const Config whole_cfg = tiny_with({"train.batch_size=8"});
  const Config micro_cfg = tiny_with({"train.batch_size=8", "train.micro_batches=" + std::to_string(M)});
  CommStats stats;
  Comm self(MPI_COMM_SELF, stats);
  CpuLearner whole(whole_cfg, self, false, B);
  CpuLearner micro(micro_cfg, self, false, B / M);
  const int T = whole_cfg.model.seq_len, V = whole_cfg.model.vocab;
  std::mt19937 rng(7 + M);
  std::vector<int32_t> in((size_t)B * T), tg(in.size());
  for (int step = 0; step < 5; ++step) {
    for (auto& x : in) x = (int32_t)(rng() % V);
    for (auto& x : tg) x = (int32_t)(rng() % V);
    const StepStats w = whole.step(in.data(), tg.data(), 0.5);
    const StepStats m = micro.step(in.data(), tg.data(), 0.5);
    EXPECT_NEAR(m.loss, w.loss, 1e-6 * w.loss) << "step " << step;
    EXPECT_NEAR(m.grad_norm, w.grad_norm, 1e-5 * w.grad_norm) << "step " << step;
    EXPECT_EQ(m.counts, w.counts) << "step " << step;
  }
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = a == Arena::BACKBONE ? whole.host().layout().backbone_size
                                          : whole.host().layout().experts_size;
    double scale = 0;
    const double d = max_abs_diff(micro.host().params(a), whole.host().params(a), n, &scale);
    EXPECT_LE(d, 1e-5 * scale) << "arena " << (int)a;
    EXPECT_GT(scale, 0);
  }
  // the parameters moved: equal because both trained, not because neither did
  CpuLearner fresh(whole_cfg, self, false, B);
  double scale = 0;
  EXPECT_GT(max_abs_diff(fresh.host().params(Arena::BACKBONE), whole.host().params(Arena::BACKBONE),
                         whole.host().layout().backbone_size, &scale),
            1e-3);
  // an evaluation of the same batch: the same mean
  EXPECT_NEAR(micro.eval_batch(in.data(), tg.data()), whole.eval_batch(in.data(), tg.data()), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Counts, MicroBatches, ::testing::Values(2, 4, 8));

// With the aux loss on, the loss is the micro-batches' mean: close to the whole batch's, not equal.
TEST(MicroBatchesAux, LossIsTheMeanOfTheMicroBatches) {
  const Config whole_cfg = tiny_with({"train.batch_size=8", "model.aux_alpha=0.01"});
  const Config micro_cfg = tiny_with({"train.batch_size=8", "train.micro_batches=2", "model.aux_alpha=0.01"});
  CommStats stats;
  Comm self(MPI_COMM_SELF, stats);
  CpuLearner whole(whole_cfg, self, false, 8);
  CpuLearner micro(micro_cfg, self, false, 4);
  const int T = whole_cfg.model.seq_len;
  std::mt19937 rng(3);
  std::vector<int32_t> in((size_t)8 * T), tg(in.size());
  for (auto& x : in) x = (int32_t)(rng() % whole_cfg.model.vocab);
  for (auto& x : tg) x = (int32_t)(rng() % whole_cfg.model.vocab);
  const StepStats w = whole.step(in.data(), tg.data(), 0.5);
  const StepStats m = micro.step(in.data(), tg.data(), 0.5);
  EXPECT_NEAR(m.ce, w.ce, 1e-6 * w.ce);  // the CE is still the whole batch's mean
  EXPECT_GT(m.aux, 0);
  EXPECT_NEAR(m.aux, w.aux, 0.5 * w.aux);
}

TEST(MicroBatchesConfig, MustDivideTheBatch) {
  try {
    tiny_with({"train.batch_size=8", "train.micro_batches=3"});
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("train.micro_batches = 3 must divide train.batch_size = 8"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
