#pragma once
// The training run on every rank (DESIGN §3-§5): learners train (mode "sync": one
// data-parallel group over all learners with expert parallelism; "diloco": islands that
// sync the backbone every backbone_every steps, by all-reduce or through syncers), syncers
// serve the decoupled outer sync. Rank 0 (always a learner) writes metrics and the log.
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"  // defines: Config

namespace px {

struct TrainOptions {
  std::string run_dir;  // RUNDIR (config.toml, metrics.h5, metrics.jsonl, checkpoints/, logs/)
  bool resume = false;  // continue from the newest complete checkpoint in RUNDIR/checkpoints
  bool quiet = false;   // no per-interval log lines on stdout (tests)
  MPI_Comm world = MPI_COMM_WORLD;  // the ranks of this run (tests run on sub-communicators)
  int64_t stop_after = -1;  // stop (with a checkpoint) after this step, as a preempted job would
};

struct TrainResult {
  int64_t start_step = 0;  // 0, or the checkpoint's step when resumed
  int64_t end_step = 0;
  std::vector<double> losses;  // training loss (CE + aux, mean over islands) of every step run
  std::vector<std::pair<int64_t, double>> evals;  // (step, validation loss)
  // data.eval_without_routed: (step, validation loss with the routed experts left out)
  std::vector<std::pair<int64_t, double>> evals_without_routed;
  double seconds = 0;
  int64_t tokens = 0;  // tokens trained on by all islands (cumulative)
  // rank 0 only: bytes sent by each rank, [tier][world rank], cumulative at the end
  std::vector<std::vector<int64_t>> comm_bytes;
  // rank 0 only: the peak of each rank's C++ heap (util/heap_counter), [world rank]
  std::vector<int64_t> heap_peak_bytes;
};

TrainResult train(const Config& cfg, const TrainOptions& opt);

// SIGUSR1 (Slurm's pre-emption warning) and SIGTERM (scancel, the job's time limit): learners
// checkpoint and stop at the next step.
void install_preemption_handler();

}  // namespace px
