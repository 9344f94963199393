// Learner: one inner step with gradient reduction over the data-parallel group.
#include "train/learner.hpp"

#include <cmath>
#include <stdexcept>

namespace px {

Learner::Learner(const Config& cfg, Comm& dp, bool expert_parallel, int micro_batch,
                 const Topology* topo)
    : cfg_(cfg), dp_(dp), B_(micro_batch), T_(cfg.model.seq_len),
      model_(cfg.model, micro_batch, cfg.model.seq_len) {
  model_.init_params((uint64_t)cfg.train.seed);
  AdamWConfig ac;
  ac.weight_decay = cfg.train.weight_decay;
  ac.grad_clip = cfg.train.grad_clip;
  ac.sgd = cfg.train.optimizer == OptimizerKind::SGD;
  const int rows = micro_batch * cfg.model.seq_len * cfg.model.top_k;
  if (cfg.train.mode == TrainMode::PARALLAX) {
    if (!topo) throw std::logic_error("Learner: mode parallax needs the topology");
    px_ = std::make_unique<ParallaxExperts>(cfg, *topo, model_, rows);
    model_.release_expert_grads();  // expert gradients go to the homes / adapters (grad sink)
    opt_ = std::make_unique<AdamW>(model_.layout(), ac, 0, 0);  // the backbone only
  } else if (expert_parallel && dp.size() > 1) {
    ep_ = std::make_unique<ExpertParallel>(dp, model_, rows);
    opt_ = std::make_unique<AdamW>(model_.layout(), ac, ep_->expert_begin(), ep_->expert_end());
  } else {
    opt_ = std::make_unique<AdamW>(model_.layout(), ac);
  }
  if (cfg.train.device == DeviceKind::CUDA) {
    gpu_ = std::make_unique<GpuStepper>(cfg.model, micro_batch, cfg.model.seq_len);
    gpu_->upload(model_, *opt_);
  }
  if (dp.size() > 1) sum_stats_ = [this](double* v, int n) { dp_.allreduce_sum(v, n, Tier::CONTROL); };
  set_parallel(false);
}

void Learner::set_parallel(bool eval) {
  RoutedExperts<float>* ex = px_ ? (RoutedExperts<float>*)px_.get() : ep_.get();
  if (eval || dp_.size() == 1)
    model_.set_parallel(0, nullptr, ex);
  else
    model_.set_parallel((double)B_ * T_ * dp_.size(), &sum_stats_, ex);
}

void Learner::sync_to_host() {
  if (gpu_) gpu_->download(model_, *opt_);
}

void Learner::sync_to_device() {
  if (gpu_) gpu_->upload(model_, *opt_);
}

StepStats Learner::step(const int32_t* in, const int32_t* tg, double lr) {
  StepStats s;
  if (gpu_) {  // one GPU, one rank (check_supported): the whole step runs there
    GpuStepper::Result r = gpu_->step(in, tg, lr, cfg_.train.grad_clip, cfg_.train.weight_decay);
    s.ce = r.ce;
    s.aux = r.aux;
    s.loss = r.ce + r.aux;
    s.grad_norm = r.grad_norm;
    s.counts = std::move(r.counts);
    return s;
  }
  model_.zero_grad();
  model_.forward(in, tg);
  model_.backward();
  float* const P[2] = {model_.params(Arena::BACKBONE), model_.params(Arena::EXPERTS)};
  float* const G[2] = {model_.grads(Arena::BACKBONE), model_.grads(Arena::EXPERTS)};
  const auto& L = model_.layout();
  s.counts = model_.expert_counts();
  if (dp_.size() > 1) {
    // contributions to the group's mean loss: summing over ranks gives the gradient
    dp_.allreduce_sum(G[0], (int64_t)L.backbone_size, Tier::ISLAND);
    if (!ep_ && !px_) dp_.allreduce_sum(G[1], (int64_t)L.experts_size, Tier::ISLAND);
    dp_.allreduce_sum(s.counts.data(), (int64_t)s.counts.size(), Tier::CONTROL);
  }
  // what is spread over the ranks, in one small all-reduce: this rank's share of the mean CE
  // and, with expert parallelism, the squared gradient norm of the experts it holds
  double spread[2] = {model_.last_ce(), ep_ ? opt_->sq_norm(G[1], Arena::EXPERTS) : 0.0};
  if (dp_.size() > 1) dp_.allreduce_sum(spread, 2, Tier::CONTROL);
  const double sq = opt_->sq_norm(G[0], Arena::BACKBONE) +
                    (ep_ ? spread[1] : opt_->sq_norm(G[1], Arena::EXPERTS));
  s.ce = spread[0];
  s.aux = model_.last_aux();
  s.loss = s.ce + s.aux;
  s.grad_norm = std::sqrt(sq);
  opt_->step(P, G, lr, s.grad_norm);
  model_.update_router_bias(s.counts);
  return s;
}

double Learner::eval_batch(const int32_t* in, const int32_t* tg) {
  if (gpu_) return gpu_->eval(in, tg);
  // every rank evaluates the same batch: local statistics, local mean
  set_parallel(true);
  model_.forward(in, tg);
  const double ce = model_.last_ce();
  set_parallel(false);
  return ce;
}

}  // namespace px
