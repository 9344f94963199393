// defines: DeviceLearner
#include "backend/device_learner.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "backend/device_support.hpp"  // defines: routed_experts_on_host

namespace px {

DeviceLearner::DeviceLearner(const Config& cfg, Comm& dp, int micro_batch, const Topology* topo,
                             std::unique_ptr<DeviceStepper> dev)
    : dp_(dp), grad_clip_(cfg.train.grad_clip),
      host_(cfg.model, micro_batch, cfg.model.seq_len, learner_model_memory(cfg)),
      dev_(std::move(dev)), host_experts_(routed_experts_on_host(cfg)) {
  host_.init_params((uint64_t)cfg.train.seed);
  make_host_experts(cfg, micro_batch * cfg.model.seq_len * cfg.model.top_k, topo);
  dev_->state_from_host(host_, *host_opt_, !host_experts_);
  if (dp_.size() <= 1) {
    exchange_ = "none (one rank)";
    return;
  }
  sum_stats_ = [this](double* v, int n) { dp_.allreduce_sum(v, n, Tier::CONTROL); };
  dev_->set_group((double)micro_batch * cfg.model.seq_len * dp_.size(), &sum_stats_);
  const std::string device_group = dev_->enable_device_group(dp_);
  on_device_ = !device_group.empty();
  exchange_ = on_device_ ? device_group : "host-staged MPI";
}

void DeviceLearner::make_host_experts(const Config& cfg, int rows, const Topology* topo) {
  const AdamWConfig ac = adamw_config(cfg);
  if (cfg.train.mode == TrainMode::PARALLAX) {  // masters and views; homes step the experts
    if (!topo) throw std::logic_error("DeviceLearner: mode parallax needs the topology");
    parallax_ = std::make_unique<ParallaxExperts>(cfg, *topo, host_, rows);
    host_opt_ = std::make_unique<AdamW>(host_.layout(), ac, 0, 0);
    dev_->set_routed_experts(parallax_.get());
  } else if (host_experts_) {  // expert parallel: my block of experts, trained in host_
    expert_parallel_ = std::make_unique<ExpertParallel>(dp_, host_, rows);
    host_opt_ = std::make_unique<AdamW>(host_.layout(), ac, expert_parallel_->expert_begin(),
                                        expert_parallel_->expert_end());
    dev_->set_routed_experts(expert_parallel_.get());
  } else {
    host_opt_ = std::make_unique<AdamW>(host_.layout(), ac);
  }
}

void DeviceLearner::reduce_grads(Arena a) {
  const int64_t n = (int64_t)host_.arena_size(a);
  if (on_device_) {  // counted as the MPI all-reduce of the same host-layout arena would be
    dev_->allreduce_grads_on_device(a);
    dp_.count_allreduce(n * (int64_t)sizeof(float), Tier::ISLAND);
    return;
  }
  staging_.resize((size_t)n);
  dev_->grads_to_host(a, staging_.data());
  dp_.allreduce_sum(staging_.data(), n, Tier::ISLAND);
  dev_->grads_from_host(a, staging_.data());
}

StepStats DeviceLearner::step(const int32_t* in, const int32_t* tg, double lr) {
  // CpuLearner::step's data-parallel path, call for call (the same bytes per tier)
  StepStats s;
  if (parallax_) parallax_->begin_micro_batch(0, 1);
  if (expert_parallel_)  // the experts' gradients accumulate in host_ (its backbone's are unused)
    std::fill_n(host_.grads(Arena::EXPERTS), host_.arena_size(Arena::EXPERTS), 0.f);
  DeviceStepper::Local l = dev_->forward_backward(in, tg);
  s.aux = l.aux;
  s.counts = std::move(l.counts);
  // my share of the mean CE and, with expert parallelism, the squared norm of my experts'
  // gradients: spread over the ranks, summed in one small all-reduce
  float* const expert_grads = host_.grads(Arena::EXPERTS);
  double spread[2] = {l.ce, expert_parallel_ ? host_opt_->sq_norm(expert_grads, Arena::EXPERTS) : 0.0};
  if (dp_.size() > 1) {
    reduce_grads(Arena::BACKBONE);
    if (!host_experts_) reduce_grads(Arena::EXPERTS);  // (parallax: the homes' signal)
    dp_.allreduce_sum(s.counts.data(), (int64_t)s.counts.size(), Tier::CONTROL);
    dp_.allreduce_sum(spread, 2, Tier::CONTROL);
  }
  s.ce = spread[0];
  s.loss = s.ce + s.aux;
  s.grad_norm = std::sqrt(spread[1] + dev_->grad_sq_norm());
  s.skipped = step_must_skip(s, lr, grad_clip_);  // the same on every rank of the group
  if (s.skipped) return s;
  dev_->apply(lr, s.grad_norm);
  if (expert_parallel_) {  // my experts, on the host (AdamW skips the null backbone)
    float* const params[2] = {nullptr, host_.params(Arena::EXPERTS)};
    float* const grads[2] = {nullptr, expert_grads};
    host_opt_->step(params, grads, lr, s.grad_norm);
  }
  dev_->update_router_bias(s.counts);
  return s;
}

void DeviceLearner::to_host(Arena a) {
  if (a == Arena::EXPERTS && host_experts_) return;  // (live on the host)
  dev_->params_to_host(a, host_);
}

void DeviceLearner::to_device(Arena a) {
  if (a == Arena::EXPERTS && host_experts_) return;
  dev_->params_from_host(a, host_);
}

}  // namespace px
