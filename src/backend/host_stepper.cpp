// defines: HostStepper
#include "backend/host_stepper.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "backend/device_support.hpp"  // defines: routed_experts_on_host
#include "backend/learner_model.hpp"    // defines: adamw_config, learner_model_memory
#include "backend/state_copy.hpp"     // defines: copy_arena, copy_state

namespace px {

HostStepper::HostStepper(const Config& cfg, int micro_batch)
    : model_(cfg.model, micro_batch, cfg.model.seq_len, learner_model_memory(cfg)),
      opt_(model_.layout(), adamw_config(cfg), 0, routed_experts_on_host(cfg) ? 0 : -1) {}

void HostStepper::set_group(double global_tokens,
                            const std::function<void(double*, int)>* sum_stats) {
  global_tokens_ = global_tokens;
  sum_stats_ = sum_stats;
  model_.set_parallel(global_tokens, sum_stats, experts_);
}

void HostStepper::set_routed_experts(RoutedExperts<float>* ex) {
  experts_ = ex;
  model_.set_parallel(global_tokens_, sum_stats_, experts_);
}

DeviceStepper::Local HostStepper::forward_backward(const int32_t* in, const int32_t* tg) {
  model_.zero_grad();
  model_.set_loss_scale(1.0);
  model_.forward(in, tg);
  model_.backward();
  return {model_.last_ce(), model_.last_aux(), model_.expert_counts()};
}

double HostStepper::eval(const int32_t* in, const int32_t* tg) {
  model_.set_parallel(0, nullptr, experts_);  // every rank evaluates the same batch alone
  model_.forward(in, tg);
  model_.set_parallel(global_tokens_, sum_stats_, experts_);
  return model_.last_ce();
}

double HostStepper::eval_without_routed(const int32_t* in, const int32_t* tg) {
  model_.set_drop_routed(true);
  const double ce = eval(in, tg);
  model_.set_drop_routed(false);
  return ce;
}

void HostStepper::grads_to_host(Arena a, float* dst) {
  std::copy_n(model_.grads(a), model_.arena_size(a), dst);
}

void HostStepper::grads_from_host(Arena a, const float* src) {
  std::copy_n(src, model_.arena_size(a), model_.grads(a));
}

std::string HostStepper::enable_device_group(Comm& dp) {
  const char* env = std::getenv("PARALLAX_STAGED_DEVICE_GROUP");
  if (!env || std::string(env) != "1") return "";
  device_comm_ = std::make_unique<Comm>(dp.get(), uncounted_);
  return "staged device all-reduce";
}

void HostStepper::allreduce_grads_on_device(Arena a) {
  device_comm_->allreduce_sum(model_.grads(a), (int64_t)model_.arena_size(a), Tier::ISLAND);
}

double HostStepper::grad_sq_norm() {
  return opt_.sq_norm(model_.grads(Arena::BACKBONE), Arena::BACKBONE) +
         opt_.sq_norm(model_.grads(Arena::EXPERTS), Arena::EXPERTS);
}

void HostStepper::apply(double lr, double grad_norm) {
  float* const params[2] = {model_.params(Arena::BACKBONE), model_.params(Arena::EXPERTS)};
  float* const grads[2] = {model_.grads(Arena::BACKBONE), model_.grads(Arena::EXPERTS)};
  opt_.step(params, grads, lr, grad_norm);
}

void HostStepper::params_to_host(Arena a, MoeModel<float>& host) { copy_arena(model_, host, a); }

void HostStepper::params_from_host(Arena a, MoeModel<float>& host) { copy_arena(host, model_, a); }

void HostStepper::state_to_host(MoeModel<float>& host, AdamW& opt, bool experts) {
  copy_state(model_, opt_, host, opt, experts);
}

void HostStepper::state_from_host(MoeModel<float>& host, AdamW& opt, bool experts) {
  copy_state(host, opt, model_, opt_, experts);
}

}  // namespace px
