// defines: CpuLearner
#include "backend/cpu_learner.hpp"

#include <cmath>
#include <stdexcept>

namespace px {

AdamWConfig adamw_config(const Config& cfg) {
  AdamWConfig ac;
  ac.weight_decay = cfg.train.weight_decay;
  ac.grad_clip = cfg.train.grad_clip;
  ac.sgd = cfg.train.optimizer == OptimizerKind::SGD;
  return ac;
}

CpuLearner::CpuLearner(const Config& cfg, Comm& dp, bool expert_parallel, int micro_batch,
                       const Topology* topo)
    : dp_(dp), batch_(micro_batch), seq_(cfg.model.seq_len), micro_(cfg.train.micro_batches),
      grad_clip_(cfg.train.grad_clip),
      model_(cfg.model, micro_batch, cfg.model.seq_len, learner_model_memory(cfg)) {
  model_.init_params((uint64_t)cfg.train.seed);
  const AdamWConfig ac = adamw_config(cfg);
  const int rows = micro_batch * cfg.model.seq_len * cfg.model.top_k;
  if (cfg.train.mode == TrainMode::PARALLAX) {
    if (!topo) throw std::logic_error("CpuLearner: mode parallax needs the topology");
    parallax_ = std::make_unique<ParallaxExperts>(cfg, *topo, model_, rows);
    // the backbone only
    opt_ = std::make_unique<AdamW>(model_.layout(), ac, 0, 0, zero_windows(cfg, false));
  } else if (expert_parallel && dp.size() > 1) {
    expert_parallel_ = std::make_unique<ExpertParallel>(dp, model_, rows);
    opt_ = std::make_unique<AdamW>(model_.layout(), ac, expert_parallel_->expert_begin(),
                                   expert_parallel_->expert_end(), zero_windows(cfg, false));
  } else {
    opt_ = std::make_unique<AdamW>(model_.layout(), ac, 0, -1, zero_windows(cfg, true));
  }
  if (dp.size() > 1) sum_stats_ = [this](double* v, int n) { dp_.allreduce_sum(v, n, Tier::CONTROL); };
  set_parallel(false);
}

std::array<ArenaWindow, 2> CpuLearner::zero_windows(const Config& cfg, bool experts_reduced) {
  std::array<ArenaWindow, 2> w{};
  const int D = dp_.size(), r = dp_.rank();
  if (cfg.train.zero != 1 || D == 1) return w;
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    if (a == Arena::EXPERTS && !experts_reduced) continue;
    w[(int)a] = zero_shard(0, model_.arena_size(a), r, D, shards_[(int)a]);
  }
  return w;
}

void CpuLearner::reduce_grads(Arena a, float* grads) {
  if (shards_[(int)a].empty()) dp_.allreduce_sum(grads, (int64_t)model_.arena_size(a), Tier::ISLAND);
  else dp_.reduce_scatter_sum(grads, shards_[(int)a], Tier::ISLAND);
}

void CpuLearner::set_parallel(bool eval) {
  RoutedExperts<float>* ex =
      parallax_ ? (RoutedExperts<float>*)parallax_.get() : expert_parallel_.get();
  if (eval || dp_.size() == 1)
    model_.set_parallel(0, nullptr, ex);
  else
    model_.set_parallel((double)batch_ * seq_ * dp_.size(), &sum_stats_, ex);
}

double CpuLearner::accumulate(const int32_t* in, const int32_t* tg, std::vector<int64_t>& counts,
                              double& aux) {
  // the batch as micro_ micro-batches: each one's loss gradient scaled by 1 / micro_, so that
  // the accumulated gradient is that of their mean loss
  const size_t per = (size_t)batch_ * seq_;
  model_.zero_grad();
  model_.set_loss_scale(1.0 / micro_);
  double ce = 0;
  aux = 0;
  for (int i = 0; i < micro_; ++i) {
    if (parallax_) parallax_->begin_micro_batch(i, micro_);
    model_.forward(in + i * per, tg + i * per);
    model_.backward();
    ce += model_.last_ce();
    aux += model_.last_aux();
    const std::vector<int64_t> c = model_.expert_counts();
    if (i == 0) counts = c;
    else
      for (size_t j = 0; j < c.size(); ++j) counts[j] += c[j];
  }
  aux /= micro_;
  return ce / micro_;
}

StepStats CpuLearner::step(const int32_t* in, const int32_t* tg, double lr) {
  StepStats s;
  const double my_ce = accumulate(in, tg, s.counts, s.aux);
  float* const params[2] = {model_.params(Arena::BACKBONE), model_.params(Arena::EXPERTS)};
  float* const grads[2] = {model_.grads(Arena::BACKBONE), model_.grads(Arena::EXPERTS)};
  if (dp_.size() > 1) {
    // contributions to the group's mean loss: summing over ranks gives the gradient
    reduce_grads(Arena::BACKBONE, grads[0]);
    if (!expert_parallel_ && !parallax_) reduce_grads(Arena::EXPERTS, grads[1]);
    dp_.allreduce_sum(s.counts.data(), (int64_t)s.counts.size(), Tier::CONTROL);
  }
  // what is spread over the ranks, in one small all-reduce: this rank's share of the mean CE,
  // the squared gradient norm of the arenas it steps a part of (the experts it holds with
  // expert parallelism; its shards with ZeRO-1)
  const bool split[2] = {!shards_[0].empty(), expert_parallel_ || !shards_[1].empty()};
  double spread[2] = {my_ce, 0.0};
  for (int a = 0; a < 2; ++a)
    if (split[a]) spread[1] += opt_->sq_norm(grads[a], (Arena)a);
  if (dp_.size() > 1) dp_.allreduce_sum(spread, 2, Tier::CONTROL);
  double sq = spread[1];
  for (int a = 0; a < 2; ++a)
    if (!split[a]) sq += opt_->sq_norm(grads[a], (Arena)a);
  s.ce = spread[0];
  s.loss = s.ce + s.aux;
  s.grad_norm = std::sqrt(sq);
  // every rank of the group has the same all-reduced loss and norm: they skip together
  s.skipped = step_must_skip(s, lr, grad_clip_);
  if (s.skipped) return s;
  opt_->step(params, grads, lr, s.grad_norm);
  for (int a = 0; a < 2; ++a)  // ZeRO-1: every rank's updated shard to every rank
    if (!shards_[a].empty()) dp_.allgather_blocks(params[a], shards_[a], Tier::ISLAND);
  model_.update_router_bias(s.counts);
  return s;
}


double CpuLearner::eval_batch(const int32_t* in, const int32_t* tg) {
  // every rank evaluates the same batch: local statistics, local mean
  // (in micro-batches of equal size: the mean of their means)
  set_parallel(true);
  const size_t per = (size_t)batch_ * seq_;
  double ce = 0;
  for (int i = 0; i < micro_; ++i) {
    model_.forward(in + i * per, tg + i * per);
    ce += model_.last_ce();
  }
  set_parallel(false);
  return ce / micro_;
}

}  // namespace px
