#pragma once
// What a learner reports (DESIGN §8 metrics): per log interval the mean training loss over
// islands, aux loss, lr, gradient norm, tokens/s and ETA on the console, and rank 0's rows of
// metrics.h5 / metrics.jsonl (losses, expert loads, peak memory and bytes per tier of every
// rank); evaluations; at the end the bytes per token of every tier and the closing line.
//   Coupled islands: the interval rows gather over the learners (collective: every learner
//     calls write_interval and write_eval at the same steps).
//   Decoupled islands (islands_decoupled): gathers stay inside the island; its leader reports
//     to learner 0 (IslandReports), which writes a row once every island's report of that step
//     has arrived; rank 0's console shows its own island (island 0) as it goes.
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/learner_model.hpp"  // defines: StepStats
#include "io/metrics_writer.hpp"      // defines: MetricsWriter
#include "roles/island_reports.hpp"   // defines: IslandReports
#include "roles/memory_peaks.hpp"     // defines: MemoryPeaks
#include "roles/run_context.hpp"      // defines: RunContext
#include "train/trainer.hpp"          // defines: TrainResult

namespace px {

// One log interval's row of metrics.h5 (learner columns only: [tier][learner], [learner]).
struct IntervalRow {
  int64_t step = 0, tokens = 0, skipped = 0;
  double ce = 0, aux = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, time_s = 0;
  bool last = false;
  std::vector<int64_t> load;                // [moe_layers * E], summed over islands
  std::vector<int64_t> peak;                // [learners]
  std::vector<std::vector<int64_t>> comm;   // [tier][learners]
};

class LearnerMetrics {
 public:
  // comms: every learner and my island; control: the learners' control communicator. Rank 0
  // opens metrics.h5, dropping rows after start_step (a resume) or setting the file aside
  // (`set_aside`: a re-homed run's old world size).
  // res: the role's result, which the evaluations and the final byte counts go into.
  LearnerMetrics(RunContext& ctx, Comm& learners, Comm& island, Comm& control, int64_t start_step,
                 bool set_aside, TrainResult& res);

  // One step's statistics (loss already the mean over islands, or over my island when decoupled).
  void add_step(const StepStats& s, int64_t step_tokens);
  // The interval's rows; clears the interval.
  void write_interval(int64_t step, int64_t total_tokens, double lr, bool last);
  // An evaluation: loss[0] (and loss[1] with `ablation`: the same pass with the routed experts
  // left out, data.eval_without_routed) is this rank's mean over the evaluation batches; the
  // row is the mean over islands (overwritten in place). Fills res.evals (rank 0: the rows'
  // values; elsewhere the mean over learners, or over my island when decoupled).
  void write_eval(int64_t step, double* loss, bool ablation);
  // A GPU run: the progress line and /train/mfu show the model FLOPs utilization of a learner
  // (its tokens per second x flops_per_token against peak_flops, train/mfu.hpp).
  void set_peak_flops(double peak_flops, double flops_per_token) {
    peak_flops_ = peak_flops;
    flops_per_token_ = flops_per_token;
  }
  void flush();
  // The final byte counts (collective over the world, with syncers and workers), the closing
  // table and line (from res: evaluations, steps, seconds); fills res.comm_bytes on rank 0.
  void close(int64_t tokens);

 private:
  IntervalRow local_row(int64_t step, int64_t total_tokens, double lr, bool last) const;
  void gather(IntervalRow& row, Comm& group);  // peak memory and bytes of the group's ranks
  void combine_over_learners(IntervalRow& row);
  IslandReports::Words to_words(const IntervalRow& row) const;
  IntervalRow from_words(int64_t step, const std::vector<IslandReports::Words>& islands) const;
  void write_row(const IntervalRow& row);
  void write_eval_row(int64_t step, double loss, const double* without_routed);
  void write_arrived();  // rank 0, decoupled: the rows every island has reported
  void log_progress(const IntervalRow& row) const;
  void log_bytes_per_token(const std::vector<std::vector<int64_t>>& comm, int64_t tokens) const;
  void log_memory(const MemoryPeaks& mem) const;

  RunContext& ctx_;
  Comm &learners_, &island_;
  TrainResult& res_;
  const bool decoupled_;
  IslandReports reports_;
  std::unique_ptr<MetricsWriter> writer_;  // rank 0
  const int64_t start_step_;
  const bool islands_differ_;  // modes diloco / parallax with several islands: mean over them
  std::vector<int64_t> load_;  // tokens per expert in the interval [moe_layers * E]
  double loss_sum_ = 0, aux_sum_ = 0, grad_norm_ = 0;
  int64_t skipped_ = 0;  // steps my island skipped since the start (non-finite loss or norm)
  int steps_ = 0;
  int64_t tokens_ = 0;
  double peak_flops_ = 0, flops_per_token_ = 0;  // set_peak_flops (0: no MFU)
  // A learner's model FLOPs utilization at the row's tokens per second (0 without a peak).
  double mfu(const IntervalRow& row) const;
  std::chrono::steady_clock::time_point interval_start_ = std::chrono::steady_clock::now();
};

}  // namespace px
