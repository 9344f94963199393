#pragma once
// The training loop of one rank (DESIGN §4 mode "sync" on one island of one rank): data,
// model, AdamW, evaluation, metrics, checkpoints and exact resume.
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"  // defines: Config

namespace px {

struct TrainOptions {
  std::string run_dir;  // RUNDIR (config.toml, metrics.h5, metrics.jsonl, checkpoints/, logs/)
  bool resume = false;  // continue from the newest complete checkpoint in RUNDIR/checkpoints
  bool quiet = false;   // no per-interval log lines (tests)
  int64_t stop_after = -1;  // stop (with a checkpoint) after this step, as a preempted job would
};

struct TrainResult {
  int64_t start_step = 0;  // 0, or the checkpoint's step when resumed
  int64_t end_step = 0;
  std::vector<double> losses;  // training loss (CE + aux) of every step run in this call
  std::vector<std::pair<int64_t, double>> evals;  // (step, validation loss)
  double seconds = 0;
};

TrainResult train(const Config& cfg, const TrainOptions& opt);

}  // namespace px
