#pragma once
// What a learner reports (DESIGN §8 metrics): per log interval the mean training loss over
// islands, aux loss, lr, gradient norm, tokens/s and ETA on the console, and rank 0's rows of
// metrics.h5 / metrics.jsonl (losses, expert loads, peak memory and bytes per tier of every
// rank); evaluations; at the end the bytes per token of every tier and the closing line.
// The interval rows gather over the learners (collective: every learner calls write_interval).
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/learner_model.hpp"  // defines: StepStats
#include "io/metrics_writer.hpp"      // defines: MetricsWriter
#include "roles/run_context.hpp"      // defines: RunContext
#include "train/trainer.hpp"          // defines: TrainResult

namespace px {

class LearnerMetrics {
 public:
  // learners: every learner rank; rank 0 opens metrics.h5, dropping rows after start_step
  // (a resume) or setting the file aside (`set_aside`: a re-homed run's old world size).
  LearnerMetrics(RunContext& ctx, Comm& learners, int64_t start_step, bool set_aside);

  // One step's statistics (loss already the mean over islands).
  void add_step(const StepStats& s, int64_t step_tokens);
  // The interval's rows (collective over the learners); clears the interval.
  void write_interval(int64_t step, int64_t total_tokens, double lr, bool last);
  // without_routed: the same pass with the routed experts left out (data.eval_without_routed).
  void write_eval(int64_t step, double loss, const double* without_routed);
  void flush();
  // The final byte counts (collective over the world, with syncers and workers), the closing
  // table and line (from res: evaluations, steps, seconds); fills res.comm_bytes on rank 0.
  void close(int64_t tokens, TrainResult& res);

 private:
  void log_bytes_per_token(const std::vector<std::vector<int64_t>>& comm, int64_t tokens) const;

  RunContext& ctx_;
  Comm& learners_;
  std::unique_ptr<MetricsWriter> writer_;  // rank 0
  const int64_t start_step_;
  const bool islands_differ_;  // modes diloco / parallax with several islands: mean over them
  std::vector<int64_t> load_;  // tokens per expert in the interval [moe_layers * E]
  double loss_sum_ = 0, aux_sum_ = 0, grad_norm_ = 0;
  int64_t skipped_ = 0;  // steps my island skipped since the start (non-finite loss or norm)
  int steps_ = 0;
  int64_t tokens_ = 0;
  std::chrono::steady_clock::time_point interval_start_ = std::chrono::steady_clock::now();
};

}  // namespace px
