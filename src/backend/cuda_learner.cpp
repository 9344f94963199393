// defines: CudaLearner
#include "backend/cuda_learner.hpp"

#include <stdexcept>

namespace px {

CudaLearner::CudaLearner(const Config& cfg, int micro_batch)
    : cfg_(cfg), model_(cfg.model, micro_batch, cfg.model.seq_len) {
  model_.init_params((uint64_t)cfg.train.seed);
  opt_ = std::make_unique<AdamW>(model_.layout(), adamw_config(cfg));
  gpu_ = std::make_unique<GpuStepper>(cfg.model, micro_batch, cfg.model.seq_len);
  gpu_->upload(model_, *opt_);
}

StepStats CudaLearner::step(const int32_t* in, const int32_t* tg, double lr) {
  GpuStepper::Result r = gpu_->step(in, tg, lr, cfg_.train.grad_clip, cfg_.train.weight_decay);
  StepStats s;
  s.ce = r.ce;
  s.aux = r.aux;
  s.loss = r.ce + r.aux;
  s.grad_norm = r.grad_norm;
  s.counts = std::move(r.counts);
  return s;
}

double CudaLearner::eval_batch(const int32_t* in, const int32_t* tg) { return gpu_->eval(in, tg); }

double CudaLearner::eval_batch_without_routed(const int32_t*, const int32_t*) {
  throw std::logic_error("CudaLearner: the routed-expert ablation is not built on the GPU");
}

}  // namespace px
