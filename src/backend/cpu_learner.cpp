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
      model_(cfg.model, micro_batch, cfg.model.seq_len) {
  model_.init_params((uint64_t)cfg.train.seed);
  const AdamWConfig ac = adamw_config(cfg);
  const int rows = micro_batch * cfg.model.seq_len * cfg.model.top_k;
  if (cfg.train.mode == TrainMode::PARALLAX) {
    if (!topo) throw std::logic_error("CpuLearner: mode parallax needs the topology");
    parallax_ = std::make_unique<ParallaxExperts>(cfg, *topo, model_, rows);
    model_.release_expert_grads();  // expert gradients go to the homes / adapters (grad sink)
    opt_ = std::make_unique<AdamW>(model_.layout(), ac, 0, 0);  // the backbone only
  } else if (expert_parallel && dp.size() > 1) {
    expert_parallel_ = std::make_unique<ExpertParallel>(dp, model_, rows);
    opt_ = std::make_unique<AdamW>(model_.layout(), ac, expert_parallel_->expert_begin(),
                                   expert_parallel_->expert_end());
  } else {
    opt_ = std::make_unique<AdamW>(model_.layout(), ac);
  }
  if (dp.size() > 1) sum_stats_ = [this](double* v, int n) { dp_.allreduce_sum(v, n, Tier::CONTROL); };
  set_parallel(false);
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
  const auto& layout = model_.layout();
  if (dp_.size() > 1) {
    // contributions to the group's mean loss: summing over ranks gives the gradient
    dp_.allreduce_sum(grads[0], (int64_t)layout.backbone_size, Tier::ISLAND);
    if (!expert_parallel_ && !parallax_)
      dp_.allreduce_sum(grads[1], (int64_t)layout.experts_size, Tier::ISLAND);
    dp_.allreduce_sum(s.counts.data(), (int64_t)s.counts.size(), Tier::CONTROL);
  }
  // what is spread over the ranks, in one small all-reduce: this rank's share of the mean CE
  // and, with expert parallelism, the squared gradient norm of the experts it holds
  double spread[2] = {my_ce,
                      expert_parallel_ ? opt_->sq_norm(grads[1], Arena::EXPERTS) : 0.0};
  if (dp_.size() > 1) dp_.allreduce_sum(spread, 2, Tier::CONTROL);
  const double sq = opt_->sq_norm(grads[0], Arena::BACKBONE) +
                    (expert_parallel_ ? spread[1] : opt_->sq_norm(grads[1], Arena::EXPERTS));
  s.ce = spread[0];
  s.loss = s.ce + s.aux;
  s.grad_norm = std::sqrt(sq);
  // every rank of the group has the same all-reduced loss and norm: they skip together
  s.skipped = !std::isfinite(s.loss) || !std::isfinite(s.grad_norm);
  if (s.skipped) return s;
  opt_->step(params, grads, lr, s.grad_norm);
  model_.update_router_bias(s.counts);
  return s;
}

double CpuLearner::eval_batch_without_routed(const int32_t* in, const int32_t* tg) {
  model_.set_drop_routed(true);
  const double ce = eval_batch(in, tg);
  model_.set_drop_routed(false);
  return ce;
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
