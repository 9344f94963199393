// defines: LearnerMetrics
#include "roles/learner_metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace px {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

std::string fmt_duration(double s) {
  const int64_t t = (int64_t)s;
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (int)(t % 3600 / 60));
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, (int)(t % 60));
  return fmt::format("{:.1f}s", s);
}

void append_comm_rows(MetricsWriter& m, const std::vector<std::vector<int64_t>>& per_tier) {
  for (int t = 0; t < kTierCount; ++t)
    m.append_row(fmt::format("/comm/{}/bytes", tier_name((Tier)t)), per_tier[t],
                 {(hsize_t)per_tier[t].size()});
}

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

}  // namespace

LearnerMetrics::LearnerMetrics(RunContext& ctx, Comm& learners, int64_t start_step, bool set_aside)
    : ctx_(ctx), learners_(learners), start_step_(start_step),
      islands_differ_(ctx.cfg.train.mode != TrainMode::SYNC && ctx.topo.islands > 1),
      load_((size_t)ctx.cfg.model.moe_layers() * ctx.cfg.model.n_experts, 0) {
  if (ctx.world_rank != 0) return;
  const std::string path = ctx.run_dir + "/metrics.h5";
  if (set_aside && fs::exists(path)) {
    // its [rows, world] datasets have the old world size: keep the file, start a new one
    const std::string aside = fmt::format("{}/metrics.before_step_{:08d}.h5", ctx.run_dir, start_step);
    fs::rename(path, aside);
    ctx.log->info("metrics of the old topology moved to {}", aside);
  }
  writer_ = std::make_unique<MetricsWriter>(ctx.run_dir);
  // rows after the resumed step are replayed; a fresh start (a run killed before its first
  // checkpoint, started again) keeps none, not even the step-0 evaluation
  writer_->truncate_after_step(start_step > 0 ? start_step : -1);
}

void LearnerMetrics::add_step(const StepStats& s, int64_t step_tokens) {
  for (size_t i = 0; i < load_.size(); ++i) load_[i] += s.counts[i];
  loss_sum_ += s.ce;
  aux_sum_ += s.aux;
  grad_norm_ = s.grad_norm;
  skipped_ += s.skipped ? 1 : 0;
  tokens_ += step_tokens;
  ++steps_;
}

void LearnerMetrics::write_interval(int64_t step, int64_t total_tokens, double lr, bool last) {
  const Config& cfg = ctx_.cfg;
  const int64_t steps = cfg.train.steps;
  const int learners = ctx_.topo.learners(), world = ctx_.world_size;
  const double dt = seconds_since(interval_start_), elapsed = seconds_since(ctx_.t0);
  const double tps = tokens_ / std::max(dt, 1e-9);
  const double eta = elapsed / (double)(step - start_step_) * (double)(steps - step);
  const double ce = loss_sum_ / steps_, aux = aux_sum_ / steps_;
  // expert loads and skipped steps of my island -> of all islands (one all-reduce)
  std::vector<int64_t> counts = load_;
  counts.push_back(skipped_);
  if (islands_differ_) {
    learners_.allreduce_sum(counts.data(), (int64_t)counts.size(), Tier::CONTROL);
    for (auto& x : counts) x /= ctx_.topo.ranks_per_island;
  }
  const int64_t skipped = counts.back();
  std::copy(counts.begin(), counts.end() - 1, load_.begin());
  auto comm = ctx_.stats.gather_to_root(learners_.get());
  std::vector<int64_t> peak(learners, peak_rss_bytes());
  const int64_t mine = peak[0];
  learners_.gather(&mine, sizeof mine, peak.data(), 0, Tier::CONTROL);
  ctx_.log->info("step {:>6}/{} | loss {:.4f} | aux {:.4f} | lr {:.2e} | gnorm {:.3f} | "
                 "{:.0f} tok/s | ETA {}{}",
                 step, steps, ce, aux, lr, grad_norm_, tps, fmt_duration(eta),
                 skipped ? fmt::format(" | {} steps skipped (non-finite)", skipped) : "");
  if (writer_) {
    MetricsWriter& m = *writer_;
    m.append("/train/step", step);
    m.append("/train/loss", ce);
    m.append("/train/aux_loss", aux);
    m.append("/train/lr", lr);
    m.append("/train/tokens", total_tokens);
    m.append("/train/time_s", elapsed);
    m.append("/train/tokens_per_s", tps);
    m.append("/train/grad_norm", grad_norm_);
    m.append("/train/skipped_steps", skipped);
    m.append_row("/experts/load", load_,
                 {(hsize_t)cfg.model.moe_layers(), (hsize_t)cfg.model.n_experts});
    std::vector<int64_t> peak_world(world, -1);
    std::copy(peak.begin(), peak.end(), peak_world.begin());
    m.append_row("/memory/peak_bytes", peak_world, {(hsize_t)world});
    if (!last) {  // syncer and worker columns are known at the end only: -1 until then
      for (auto& row : comm) row.resize(world, -1);
      append_comm_rows(m, comm);
    }
    int64_t sent = 0;
    for (auto& row : comm)
      for (int r = 0; r < learners; ++r) sent += row[r];
    m.log_jsonl({{"step", (double)step},
                 {"loss", ce},
                 {"aux_loss", aux},
                 {"lr", lr},
                 {"grad_norm", grad_norm_},
                 {"skipped_steps", (double)skipped},
                 {"tokens", (double)total_tokens},
                 {"tokens_per_s", tps},
                 {"time_s", elapsed},
                 {"bytes_sent_per_rank_per_token",
                  (double)sent / learners / std::max<int64_t>(1, total_tokens)}});
  }
  std::fill(load_.begin(), load_.end(), 0);
  loss_sum_ = aux_sum_ = 0;
  steps_ = 0;
  tokens_ = 0;
  interval_start_ = clock_type::now();
}

void LearnerMetrics::write_eval(int64_t step, double loss, const double* without_routed) {
  if (writer_) {
    writer_->append("/eval/step", step);
    writer_->append("/eval/loss", loss);
    if (without_routed) writer_->append("/eval/loss_without_routed", *without_routed);
  }
  if (without_routed)
    ctx_.log->info("step {:>6} | eval loss {:.4f} | without routed experts {:.4f} ({:+.4f})", step,
                   loss, *without_routed, *without_routed - loss);
  else
    ctx_.log->info("step {:>6} | eval loss {:.4f}", step, loss);
}

void LearnerMetrics::flush() {
  if (writer_) writer_->flush();
}

void LearnerMetrics::log_bytes_per_token(const std::vector<std::vector<int64_t>>& comm,
                                         int64_t tokens) const {
  const int learners = ctx_.topo.learners();
  ctx_.log->info("bytes sent per token, by tier: mean over learners | all syncers and workers");
  const double tok = (double)std::max<int64_t>(1, tokens);
  for (int t = 0; t < kTierCount; ++t) {
    int64_t mine = 0, others = 0;
    for (int r = 0; r < learners; ++r) mine += comm[t][r];
    for (int r = learners; r < ctx_.world_size; ++r) others += comm[t][r];
    if (mine > 0 || others > 0)
      ctx_.log->info("  {:<16} {:>12.2f} | {:>12.2f}", tier_name((Tier)t),
                     (double)mine / learners / tok, (double)others / tok);
  }
}

void LearnerMetrics::close(int64_t tokens, TrainResult& res) {
  auto comm = ctx_.stats.gather_to_root(ctx_.world);  // syncers and workers join this one
  if (writer_) {
    append_comm_rows(*writer_, comm);
    writer_->flush();
    res.comm_bytes = comm;
    log_bytes_per_token(comm, tokens);
  }
  if (!res.evals.empty())
    ctx_.log->info("done: {} steps in {} | validation loss {:.4f} (first {:.4f}) | metrics "
                   "{}/metrics.h5 | checkpoints {}",
                   res.end_step - res.start_step, fmt_duration(res.seconds), res.evals.back().second,
                   res.evals.front().second, ctx_.run_dir, ctx_.ckpt_dir);
}

}  // namespace px
