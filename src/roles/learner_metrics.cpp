// defines: LearnerMetrics
#include "roles/learner_metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "roles/memory_peaks.hpp"    // defines: peak_rss_bytes, gather_memory_peaks
#include "roles/stop_agreement.hpp"  // defines: islands_decoupled
#include "train/mfu.hpp"            // defines: model_flops_utilization

namespace px {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

namespace {

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

LearnerMetrics::LearnerMetrics(RunContext& ctx, Comm& learners, Comm& island, Comm& control,
                               int64_t start_step, bool set_aside, TrainResult& res)
    : ctx_(ctx), learners_(learners), island_(island), res_(res),
      decoupled_(islands_decoupled(ctx.cfg, ctx.topo)), reports_(ctx.topo, control),
      start_step_(start_step),
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

IntervalRow LearnerMetrics::local_row(int64_t step, int64_t total_tokens, double lr, bool last) const {
  IntervalRow row;
  row.step = step;
  row.tokens = total_tokens;
  row.lr = lr;
  row.last = last;
  row.ce = loss_sum_ / steps_;
  row.aux = aux_sum_ / steps_;
  row.grad_norm = grad_norm_;
  row.time_s = seconds_since(ctx_.t0);
  row.tokens_per_s = tokens_ / std::max(seconds_since(interval_start_), 1e-9);
  // decoupled: my island's tokens (rank 0 adds the islands')
  if (decoupled_) row.tokens_per_s /= ctx_.topo.islands;
  row.load = load_;
  row.skipped = skipped_;
  return row;
}

void LearnerMetrics::gather(IntervalRow& row, Comm& group) {
  // peak memory and byte counts of every rank of the group, at its rank 0
  row.comm = ctx_.stats.gather_to_root(group.get());
  row.peak.assign(group.size(), peak_rss_bytes());
  const int64_t mine = row.peak[0];
  group.gather(&mine, sizeof mine, row.peak.data(), 0, Tier::CONTROL);
}

void LearnerMetrics::combine_over_learners(IntervalRow& row) {
  // expert loads and skipped steps of my island -> of all islands (one all-reduce)
  std::vector<int64_t> counts = row.load;
  counts.push_back(row.skipped);
  if (islands_differ_) {
    learners_.allreduce_sum(counts.data(), (int64_t)counts.size(), Tier::CONTROL);
    for (auto& x : counts) x /= ctx_.topo.ranks_per_island;
  }
  row.skipped = counts.back();
  std::copy(counts.begin(), counts.end() - 1, row.load.begin());
  gather(row, learners_);
}

IslandReports::Words LearnerMetrics::to_words(const IntervalRow& row) const {
  IslandReports::Words w = {row.tokens, row.skipped, row.last ? 1 : 0,
                            word_of(row.ce), word_of(row.aux), word_of(row.lr),
                            word_of(row.grad_norm), word_of(row.tokens_per_s), word_of(row.time_s)};
  w.insert(w.end(), row.load.begin(), row.load.end());
  w.insert(w.end(), row.peak.begin(), row.peak.end());
  for (const auto& t : row.comm) w.insert(w.end(), t.begin(), t.end());
  return w;
}

IntervalRow LearnerMetrics::from_words(int64_t step,
                                       const std::vector<IslandReports::Words>& islands) const {
  const int I = ctx_.topo.islands, R = ctx_.topo.ranks_per_island;
  const size_t nl = load_.size(), head = 9;
  IntervalRow row;
  row.step = step;
  row.load.assign(nl, 0);
  row.comm.assign(kTierCount, {});
  for (int i = 0; i < I; ++i) {
    const IslandReports::Words& w = islands[i];
    if (w.size() != head + nl + (size_t)R * (1 + kTierCount))
      throw std::runtime_error(fmt::format("island {}'s report of step {} has {} words", i, step, w.size()));
    if (i == 0) {  // island 0's: tokens, lr, gradient norm, last (as in a coupled run's rows)
      row.tokens = w[0];
      row.last = w[2] != 0;
      row.lr = double_of(w[5]);
      row.grad_norm = double_of(w[6]);
    }
    row.skipped += w[1];
    row.ce += double_of(w[3]) / I;
    row.aux += double_of(w[4]) / I;
    row.tokens_per_s += double_of(w[7]);
    row.time_s = std::max(row.time_s, double_of(w[8]));
    for (size_t k = 0; k < nl; ++k) row.load[k] += w[head + k];
    const size_t p = head + nl;
    row.peak.insert(row.peak.end(), w.begin() + p, w.begin() + p + R);
    for (int t = 0; t < kTierCount; ++t)
      row.comm[t].insert(row.comm[t].end(), w.begin() + p + R * (1 + t), w.begin() + p + R * (2 + t));
  }
  return row;
}

void LearnerMetrics::write_interval(int64_t step, int64_t total_tokens, double lr, bool last) {
  IntervalRow row = local_row(step, total_tokens, lr, last);
  if (decoupled_) {
    gather(row, island_);
    if (ctx_.topo.local_rank == 0) reports_.report(IslandReports::INTERVAL, step, to_words(row));
  } else {
    combine_over_learners(row);
  }
  log_progress(row);
  if (writer_ && !decoupled_) write_row(row);
  if (writer_ && decoupled_) write_arrived();
  std::fill(load_.begin(), load_.end(), 0);
  loss_sum_ = aux_sum_ = 0;
  steps_ = 0;
  tokens_ = 0;
  interval_start_ = clock_type::now();
}

double LearnerMetrics::mfu(const IntervalRow& row) const {
  // (row.tokens_per_s: every learner's together, or one island's when decoupled)
  const int per = decoupled_ ? ctx_.topo.ranks_per_island : ctx_.topo.learners();
  return model_flops_utilization(row.tokens_per_s / per, flops_per_token_, peak_flops_);
}

void LearnerMetrics::log_progress(const IntervalRow& row) const {
  const int64_t steps = ctx_.cfg.train.steps;
  const double eta = seconds_since(ctx_.t0) / (double)(row.step - start_step_) * (double)(steps - row.step);
  ctx_.log->info("step {:>6}/{} | loss {:.4f} | aux {:.4f} | lr {:.2e} | gnorm {:.3f} | "
                 "{:.0f} tok/s{} | ETA {}{}{}",
                 row.step, steps, row.ce, row.aux, row.lr, row.grad_norm, row.tokens_per_s,
                 peak_flops_ > 0 ? fmt::format(" | MFU {:.1f}%", 100 * mfu(row)) : "",
                 fmt_duration(eta),
                 row.skipped ? fmt::format(" | {} steps skipped (non-finite)", row.skipped) : "",
                 decoupled_ ? fmt::format(" | island {}", ctx_.topo.island) : "");
}

void LearnerMetrics::write_row(const IntervalRow& row) {
  const Config& cfg = ctx_.cfg;
  const int learners = ctx_.topo.learners(), world = ctx_.world_size;
  MetricsWriter& m = *writer_;
  m.append("/train/step", row.step);
  m.append("/train/loss", row.ce);
  m.append("/train/aux_loss", row.aux);
  m.append("/train/lr", row.lr);
  m.append("/train/tokens", row.tokens);
  m.append("/train/time_s", row.time_s);
  m.append("/train/tokens_per_s", row.tokens_per_s);
  if (peak_flops_ > 0) m.append("/train/mfu", mfu(row));
  m.append("/train/grad_norm", row.grad_norm);
  m.append("/train/skipped_steps", row.skipped);
  m.append_row("/experts/load", row.load,
               {(hsize_t)cfg.model.moe_layers(), (hsize_t)cfg.model.n_experts});
  std::vector<int64_t> peak_world(world, -1);
  std::copy(row.peak.begin(), row.peak.end(), peak_world.begin());
  m.append_row("/memory/peak_bytes", peak_world, {(hsize_t)world});
  std::vector<std::vector<int64_t>> comm = row.comm;
  if (!row.last) {  // syncer and worker columns are known at the end only: -1 until then
    for (auto& r : comm) r.resize(world, -1);
    append_comm_rows(m, comm);
  }
  int64_t sent = 0;
  for (auto& r : comm)
    for (int k = 0; k < learners; ++k) sent += r[k];
  m.log_jsonl({{"step", (double)row.step},
               {"loss", row.ce},
               {"aux_loss", row.aux},
               {"lr", row.lr},
               {"grad_norm", row.grad_norm},
               {"skipped_steps", (double)row.skipped},
               {"tokens", (double)row.tokens},
               {"tokens_per_s", row.tokens_per_s},
               {"time_s", row.time_s},
               {"bytes_sent_per_rank_per_token",
                (double)sent / learners / std::max<int64_t>(1, row.tokens)}});
}

void LearnerMetrics::write_eval(int64_t step, double* loss, bool ablation) {
  const int n = ablation ? 2 : 1;
  if (!decoupled_) {  // the mean over islands (ranks of an island agree)
    learners_.allreduce_sum(loss, n, Tier::CONTROL);
    for (int k = 0; k < n; ++k) loss[k] /= ctx_.topo.learners();
    return write_eval_row(step, loss[0], ablation ? loss + 1 : nullptr);
  }
  if (island_.size() > 1) {
    island_.allreduce_sum(loss, n, Tier::CONTROL);
    for (int k = 0; k < n; ++k) loss[k] /= island_.size();
  }
  if (ctx_.topo.local_rank == 0)
    reports_.report(IslandReports::EVAL, step,
                    {word_of(loss[0]), ablation ? word_of(loss[1]) : word_of(0.0), ablation ? 1 : 0});
  if (writer_) return write_arrived();
  res_.evals.emplace_back(step, loss[0]);  // elsewhere: my island's
  if (ablation) res_.evals_without_routed.emplace_back(step, loss[1]);
}

void LearnerMetrics::write_eval_row(int64_t step, double loss, const double* without_routed) {
  res_.evals.emplace_back(step, loss);
  if (without_routed) res_.evals_without_routed.emplace_back(step, *without_routed);
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

void LearnerMetrics::write_arrived() {
  reports_.poll();
  for (const auto& g : reports_.take_complete(IslandReports::INTERVAL))
    write_row(from_words(g.step, g.islands));
  for (const auto& g : reports_.take_complete(IslandReports::EVAL)) {
    double loss[2] = {0, 0};
    for (const auto& w : g.islands) {
      loss[0] += double_of(w[0]) / ctx_.topo.islands;
      loss[1] += double_of(w[1]) / ctx_.topo.islands;
    }
    write_eval_row(g.step, loss[0], g.islands[0][2] ? loss + 1 : nullptr);
  }
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

void LearnerMetrics::log_memory(const MemoryPeaks& mem) const {
  // one line per role: the largest peak of its ranks
  const Topology& t = ctx_.topo;
  const int learners = t.learners();
  auto line = [&](const char* role, int begin, int end) {
    int64_t heap = 0, rss = 0;
    for (int r = begin; r < end; ++r) heap = std::max(heap, mem.heap[r]), rss = std::max(rss, mem.rss[r]);
    if (end > begin)
      ctx_.log->info("peak memory of a {} (largest of {}): heap {:.1f} MB, RSS {:.1f} MB", role,
                     end - begin, heap / 1e6, rss / 1e6);
  };
  line("learner", 0, learners);
  line("syncer", learners, learners + t.syncers);
  line("expert worker", learners + t.syncers, ctx_.world_size);
}

void LearnerMetrics::close(int64_t tokens) {
  TrainResult& res = res_;
  if (decoupled_) {  // every island's rows, then mine are complete
    reports_.drain();
    if (writer_) write_arrived();
  }
  auto comm = ctx_.stats.gather_to_root(ctx_.world);  // syncers and workers join this one
  const MemoryPeaks mem = gather_memory_peaks(ctx_.world_comm);  // and this one
  if (writer_) {
    append_comm_rows(*writer_, comm);
    writer_->append_row("/memory/heap_peak_bytes", mem.heap, {(hsize_t)mem.heap.size()});
    writer_->append_row("/memory/end_peak_rss_bytes", mem.rss, {(hsize_t)mem.rss.size()});
    writer_->flush();
    res.comm_bytes = comm;
    res.heap_peak_bytes = mem.heap;
    log_bytes_per_token(comm, tokens);
    log_memory(mem);
  }
  if (!res.evals.empty())
    ctx_.log->info("done: {} steps in {} | validation loss {:.4f} (first {:.4f}) | metrics "
                   "{}/metrics.h5 | checkpoints {}",
                   res.end_step - res.start_step, fmt_duration(res.seconds), res.evals.back().second,
                   res.evals.front().second, ctx_.run_dir, ctx_.ckpt_dir);
}

}  // namespace px
