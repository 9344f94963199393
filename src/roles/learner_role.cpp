// defines: LearnerRole
#include "roles/learner_role.hpp"

#include <fmt/format.h>

#include "checkpoint/resume.hpp"   // defines: rehoming
#include "optim/lr_schedule.hpp"  // defines: lr_at
#include "train/mfu.hpp"           // defines: peak_bf16_flops, train_flops_per_token
#include "util/errors.hpp"         // defines: UserError

namespace px {

namespace {

LearnerComms learner_comms(RunContext& ctx) {
  LearnerComms c{Comm(ctx.comms.learners, ctx.stats), Comm(ctx.comms.island, ctx.stats),
                 Comm(ctx.comms.peers, ctx.stats),    Comm(MPI_COMM_SELF, ctx.stats),
                 Comm(ctx.comms.leaders, ctx.stats),  Comm(ctx.comms.control, ctx.stats),
                 Comm(MPI_COMM_NULL, ctx.stats),      Comm(MPI_COMM_NULL, ctx.stats),
                 Comm(MPI_COMM_NULL, ctx.stats)};
  const Topology& t = ctx.topo;
  if (t.pipeline_stages > 1) {  // (collective over the island, then over the learners)
    const int D = t.stage_ranks(), in_stage = t.local_rank % D;
    c.stage = Comm::split(ctx.comms.island, t.stage(), in_stage, ctx.stats);
    c.pipeline = Comm::split(ctx.comms.island, in_stage, t.stage(), ctx.stats);
    c.stage_peers = Comm::split(ctx.comms.learners, t.stage(), t.world_rank, ctx.stats);
  }
  return c;
}

// The data-parallel group of the model's step: all learners in mode sync (expert parallel),
// else the island, or the rank alone under the hierarchical island tier. A pipeline stage's:
// the same stage of every island in mode sync, else the stage's ranks of the island.
Comm& data_parallel_group(const Config& cfg, LearnerComms& c) {
  if (cfg.topology.pipeline_stages > 1) return cfg.train.mode == TrainMode::SYNC ? c.stage_peers : c.stage;
  if (cfg.train.mode == TrainMode::SYNC) return c.learners;
  return cfg.sync.island_every > 1 ? c.self : c.island;
}

double lr_of(const Config& cfg, int64_t step) {  // the lr of step `step` (1-based)
  const auto& t = cfg.train;
  return lr_of_step(step, t.steps, t.warmup_steps, t.lr, t.min_lr);
}

}  // namespace

LearnerRole::LearnerRole(RunContext& ctx)
    : ctx_(ctx), cfg_(ctx.cfg), comms_(learner_comms(ctx)),
      model_(make_learner_model(cfg_, data_parallel_group(cfg_, comms_),
                                cfg_.train.mode == TrainMode::SYNC,
                                cfg_.train.batch_size / cfg_.train.micro_batches, &ctx.topo,
                                &comms_.pipeline)),
      tiers_(make_learner_tiers(cfg_, ctx.topo, *model_, comms_, ctx.p2p)),
      stop_(cfg_, ctx.topo, {comms_.learners, comms_.island, comms_.leaders, comms_.control, ctx.p2p}),
      state_(*model_, progress_),
      loader_(*ctx.train_split, cfg_.model.seq_len),
      val_loader_(*ctx.val_split, cfg_.model.seq_len),
      inputs_((size_t)cfg_.train.batch_size * cfg_.model.seq_len),
      targets_(inputs_.size()) {
  registry_.add(&state_);
  for (auto& t : tiers_.tiers) registry_.add(t.get());
}

TrainResult LearnerRole::run() {
  res_.start_step = progress_.step;
  metrics_ = std::make_unique<LearnerMetrics>(ctx_, comms_.learners, comms_.island, comms_.control,
                                              progress_.step, rehomed_, res_);
  if (const std::string gpu = model_->device_name(); !gpu.empty()) {  // a GPU run: MFU
    const double peak = peak_bf16_flops(gpu);
    if (peak > 0) metrics_->set_peak_flops(peak, train_flops_per_token(cfg_.model));
    else ctx_.log->info("device \"{}\" is not in the peak-FLOPs table (train/mfu.cpp): no MFU", gpu);
  }
  announce();
  const int B = cfg_.train.batch_size, T = cfg_.model.seq_len;
  const int64_t steps = cfg_.train.steps;
  if (progress_.step == 0 && cfg_.data.eval_every > 0) evaluate(0);
  while (progress_.step < steps) {
    const int64_t step = progress_.step + 1;
    const double lr = lr_of(cfg_, step);
    loader_.next_batch(B, T, inputs_.data(), targets_.data());
    for (auto& t : tiers_.tiers) t->before_step(step);
    StepStats stats = model_->step(inputs_.data(), targets_.data(), lr);
    progress_.step = step;
    progress_.tokens += (int64_t)B * T * ctx_.topo.data_parts();
    progress_.island_tokens += (int64_t)B * T * ctx_.topo.stage_ranks();
    const StepEvent e = end_step(stats, step, lr);
    for (auto& t : tiers_.tiers) t->after_step(e);
    metrics_->add_step(stats, (int64_t)B * T * ctx_.topo.data_parts());
    if (step % cfg_.log.every == 0 || e.last) metrics_->write_interval(step, progress_.tokens, lr, e.last);
    if (cfg_.data.eval_every > 0 && (step % cfg_.data.eval_every == 0 || e.last)) evaluate(step);
    if (e.checkpoint_due) checkpoint(step);
    metrics_->flush();
    if (e.last) break;
  }
  for (auto& t : tiers_.tiers) t->finish(res_.start_step, progress_.step);
  if (tiers_.home)
    ctx_.log->info("expert home: {} experts, {} updates, sketches {}", tiers_.home->owned().size(),
                   tiers_.home->steps_taken(), tiers_.home->tally().summary());
  res_.end_step = progress_.step;
  res_.tokens = progress_.tokens;
  res_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx_.t0).count();
  metrics_->close(progress_.tokens);
  if (diverged_) report_divergence();
  return res_;
}

void LearnerRole::report_divergence() const {
  throw UserError(fmt::format(
      "training diverged at step {}: {} steps in a row (train.max_skipped_steps) had a "
      "non-finite loss or gradient norm on an island; they were skipped, so the parameters of "
      "the last finite step are in the checkpoint of step {} in {}. Lower train.lr (now {}) or "
      "raise train.warmup_steps, then resume or start again",
      progress_.step, cfg_.train.max_skipped_steps, progress_.step, ctx_.ckpt_dir, cfg_.train.lr));
}

StepEvent LearnerRole::end_step(StepStats& stats, int64_t step, double lr) {
  mean_over_islands(stats);
  res_.losses.push_back(stats.loss);
  skipped_in_row_ = stats.skipped ? skipped_in_row_ + 1 : 0;
  StepEvent e;
  e.step = step;
  e.lr = lr;
  e.stats = &stats;
  e.island_tokens = progress_.island_tokens;
  const bool scheduled_last = step == cfg_.train.steps || step == ctx_.opt.stop_after;
  const bool scheduled_checkpoint =
      (cfg_.checkpoint.every > 0 && step % cfg_.checkpoint.every == 0) || scheduled_last;
  // 1: preempted; 2: diverged (max_skipped_steps non-finite steps in a row on some island)
  const int64_t mine = skipped_in_row_ >= cfg_.train.max_skipped_steps ? 2 : stop_requested() ? 1 : 0;
  const int64_t stop = stop_.decide(step, mine, scheduled_checkpoint);
  diverged_ = stop == 2;
  e.last = scheduled_last || stop;
  e.checkpoint_due = scheduled_checkpoint || e.last;
  return e;
}

void LearnerRole::mean_over_islands(StepStats& stats) {
  if (cfg_.train.mode == TrainMode::SYNC || ctx_.topo.islands == 1) return;
  // islands differ: their mean (decoupled: my island's ranks' mean only)
  Comm& group = stop_.decoupled() ? comms_.island : comms_.learners;
  if (group.size() == 1) return;
  double v[2] = {stats.loss, stats.aux};
  group.allreduce_sum(v, 2, Tier::CONTROL);
  stats.loss = v[0] / group.size();
  stats.aux = v[1] / group.size();
  stats.ce = stats.loss - stats.aux;
}

void LearnerRole::evaluate(int64_t step) {
  const int B = cfg_.train.batch_size, T = cfg_.model.seq_len;
  const bool ablation = cfg_.data.eval_without_routed;
  double loss[2] = {0, 0};  // with, without the routed experts
  for (int b = 0; b < cfg_.data.eval_batches; ++b) {
    val_loader_.eval_batch(b, B, T, inputs_.data(), targets_.data());
    loss[0] += model_->eval_batch(inputs_.data(), targets_.data());
    if (ablation) loss[1] += model_->eval_batch_without_routed(inputs_.data(), targets_.data());
  }
  for (double& l : loss) l /= cfg_.data.eval_batches;
  metrics_->write_eval(step, loss, ablation);
}

void LearnerRole::checkpoint(int64_t step) {
  for (auto& t : tiers_.tiers) t->before_checkpoint(step);
  progress_.data_cursor = loader_.cursor();
  const std::string path =
      registry_.save(ctx_.world, ctx_.ckpt_dir, cfg_, step, ctx_.tokenizer.get());
  ctx_.log->info("checkpoint {}", path);
}

void LearnerRole::resume(const std::string& checkpoint) {
  const StateReader reader(checkpoint, ctx_.world_rank, cfg_);
  rehomed_ = reader.rehoming();
  registry_.load(reader);
  for (auto& t : tiers_.tiers) t->resumed(progress_.step, progress_.island_tokens);
  if (rehomed_)
    ctx_.log->info("re-homed the experts: topology.expert_workers {} -> {}",
                   reader.saved_config().topology.expert_workers, cfg_.topology.expert_workers);
  loader_.set_cursor(progress_.data_cursor);
  ctx_.log->info("resumed from {} (step {})", checkpoint, progress_.step);
}

void LearnerRole::announce() const {
  const auto& layout = model_->host().layout();
  const ModelConfig& mc = cfg_.model;
  const size_t backbone = layout.backbone_size, experts = layout.experts_size;
  ctx_.log->info("mode {} | {} islands x {} ranks, {} syncers | model {:.2f} M parameters ({} "
                 "backbone, {} experts), {} MoE layers x {} experts",
                 to_string(cfg_.train.mode), ctx_.topo.islands, ctx_.topo.ranks_per_island,
                 ctx_.topo.syncers, (backbone + experts) / 1e6, backbone, experts,
                 mc.moe_layers(), mc.n_experts);
  ctx_.log->info("data: {} train tokens in this rank's part, {} validation tokens; {} steps x {} "
                 "tokens x {} ranks",
                 ctx_.train_split->size(), ctx_.val_split->size(), cfg_.train.steps,
                 cfg_.train.batch_size * mc.seq_len, ctx_.topo.learners());
  if (const std::string x = model_->grad_exchange(); !x.empty())
    ctx_.log->info("device {}: {} | data-parallel gradient sum: {}", to_string(cfg_.train.device),
                   model_->device_name().empty() ? "host memory" : model_->device_name(), x);
}

}  // namespace px
