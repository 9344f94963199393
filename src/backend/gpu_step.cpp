// GpuStepper: CudaModel (+ NcclGroup) when CUDA is compiled in, a clear error otherwise.
#include "backend/gpu_step.hpp"

#include <cstdlib>
#include <stdexcept>

#include "backend/device_support.hpp"  // defines: routed_experts_on_host
#include "backend/local_device.hpp"    // defines: local_rank_from_env, device_for_local_rank
#include "parallax_config.hpp"       // defines: PARALLAX_HAS_CUDA (when built)
#include "util/errors.hpp"           // defines: UserError

#ifdef PARALLAX_HAS_CUDA
#include "cuda_common.cuh"  // defines: px::cuda::device_available, set_device
#include "cuda_model.cuh"   // defines: px::cuda::CudaModel
#include "nccl_group.cuh"   // defines: px::cuda::NcclGroup
#endif

namespace px {

#ifdef PARALLAX_HAS_CUDA

int select_local_gpu() {
  const int n = cuda::device_count();
  if (n == 0) return -1;
  const int local = local_rank_from_env([](const char* v) { return std::getenv(v); });
  const int dev = device_for_local_rank(local, n);
  cuda::set_device(dev);
  return dev;
}

struct GpuStepper::Impl {
  int device;
  cuda::CudaModel model;
  float grad_clip, weight_decay;
  std::unique_ptr<cuda::NcclGroup> nccl;
  Impl(const Config& c, int b)
      : device(select_local_gpu()),
        model(c.model, b, c.model.seq_len,
              routed_experts_on_host(c) ? cuda::CudaModel::Experts::ON_HOST
                                        : cuda::CudaModel::Experts::ON_DEVICE),
        grad_clip((float)c.train.grad_clip), weight_decay((float)c.train.weight_decay) {}
};

std::string GpuStepper::device_name() { return cuda::device_name(); }

void GpuStepper::require() {
  if (!cuda::device_available())
    throw UserError("train.device = \"cuda\": no CUDA device is visible on this machine "
                    "(check CUDA_VISIBLE_DEVICES and the driver), or use device = \"cpu\"");
}

GpuStepper::GpuStepper(const Config& cfg, int micro_batch) {
  require();
  impl_ = std::make_unique<Impl>(cfg, micro_batch);
}

void GpuStepper::set_group(double global_tokens,
                           const std::function<void(double*, int)>* sum_stats) {
  impl_->model.set_group(global_tokens, sum_stats);
}

void GpuStepper::set_routed_experts(RoutedExperts<float>* ex) {
  impl_->model.set_routed_experts(ex);
}

DeviceStepper::Local GpuStepper::forward_backward(const int32_t* in, const int32_t* tg) {
  impl_->model.forward_backward(in, tg);
  return {impl_->model.last_ce(), impl_->model.last_aux(), impl_->model.expert_counts()};
}

double GpuStepper::eval(const int32_t* in, const int32_t* tg) {
  impl_->model.forward_loss(in, tg);
  return impl_->model.last_ce();
}

double GpuStepper::eval_without_routed(const int32_t*, const int32_t*) {
  throw std::logic_error("GpuStepper: the routed-expert ablation is not built on the GPU");
}

void GpuStepper::grads_to_host(Arena a, float* dst) {
  impl_->model.download_arena((int)a, dst, true);
}

void GpuStepper::grads_from_host(Arena a, const float* src) {
  impl_->model.upload_arena_grads((int)a, src);
}

std::string GpuStepper::enable_device_group(Comm& dp) {
  // the same answer on every rank of the group (the same binary and environment), or the
  // group would call different collectives: a rank without NCCL makes all of them fall back
  const char* env = std::getenv("PARALLAX_NCCL");
  int64_t usable = cuda::nccl_unavailable().empty() && !(env && std::string(env) == "0");
  dp.allreduce_min(&usable, 1, Tier::CONTROL);
  if (!usable) return "";
  impl_->nccl = std::make_unique<cuda::NcclGroup>(
      dp.rank(), dp.size(), [&dp](void* id, int bytes) { dp.bcast(id, bytes, 0, Tier::CONTROL); });
  return "NCCL";
}

void GpuStepper::allreduce_grads_on_device(Arena a) {
  impl_->nccl->allreduce_sum(impl_->model.device_grads((int)a),
                             impl_->model.device_arena_size((int)a), impl_->model.stream());
}

double GpuStepper::grad_sq_norm() {
  const double n = impl_->model.grad_norm();
  return n * n;
}

void GpuStepper::apply(double lr, double norm) {  // (AdamW's clipping rule)
  const double clip = impl_->grad_clip;
  const float scale = clip > 0 && norm > clip ? (float)(clip / norm) : 1.f;
  impl_->model.apply_update((float)lr, impl_->weight_decay, scale);
}

void GpuStepper::params_to_host(Arena a, MoeModel<float>& host) {
  impl_->model.download_arena((int)a, host.params(a), false);
}

void GpuStepper::params_from_host(Arena a, MoeModel<float>& host) {
  impl_->model.upload_arena_params((int)a, host.params(a));
}

void GpuStepper::state_to_host(MoeModel<float>& host, AdamW& opt, bool experts) {
  cuda::CudaModel& m = impl_->model;
  auto ex = [experts](float* p) { return experts ? p : nullptr; };  // (null: skipped)
  m.download_params(host.params(Arena::BACKBONE), ex(host.params(Arena::EXPERTS)));
  m.download_optimizer(opt.m(Arena::BACKBONE).data(), ex(opt.m(Arena::EXPERTS).data()),
                       opt.v(Arena::BACKBONE).data(), ex(opt.v(Arena::EXPERTS).data()));
  opt.set_steps_taken(m.steps_taken());
}

void GpuStepper::state_from_host(MoeModel<float>& host, AdamW& opt, bool experts) {
  cuda::CudaModel& m = impl_->model;
  auto ex = [experts](float* p) { return experts ? p : nullptr; };
  m.upload_params(host.params(Arena::BACKBONE), ex(host.params(Arena::EXPERTS)));
  m.upload_optimizer(opt.m(Arena::BACKBONE).data(), ex(opt.m(Arena::EXPERTS).data()),
                     opt.v(Arena::BACKBONE).data(), ex(opt.v(Arena::EXPERTS).data()),
                     opt.steps_taken());
}

#else  // no CUDA backend in this build

struct GpuStepper::Impl {};

int select_local_gpu() { return -1; }

std::string GpuStepper::device_name() { return ""; }
void GpuStepper::require() {
  throw UserError("train.device = \"cuda\": this build has no CUDA backend (nvcc was not found "
                  "at configure time; build with -DPARALLAX_CUDA=ON on a machine with the CUDA "
                  "toolkit), or use device = \"cpu\"");
}
GpuStepper::GpuStepper(const Config&, int) { require(); }
void GpuStepper::set_group(double, const std::function<void(double*, int)>*) {}
void GpuStepper::set_routed_experts(RoutedExperts<float>*) {}
DeviceStepper::Local GpuStepper::forward_backward(const int32_t*, const int32_t*) { return {}; }
double GpuStepper::eval(const int32_t*, const int32_t*) { return 0; }
double GpuStepper::eval_without_routed(const int32_t*, const int32_t*) { return 0; }
void GpuStepper::grads_to_host(Arena, float*) {}
void GpuStepper::grads_from_host(Arena, const float*) {}
std::string GpuStepper::enable_device_group(Comm&) { return ""; }
void GpuStepper::allreduce_grads_on_device(Arena) {}
double GpuStepper::grad_sq_norm() { return 0; }
void GpuStepper::apply(double, double) {}
void GpuStepper::params_to_host(Arena, MoeModel<float>&) {}
void GpuStepper::params_from_host(Arena, MoeModel<float>&) {}
void GpuStepper::state_to_host(MoeModel<float>&, AdamW&, bool) {}
void GpuStepper::state_from_host(MoeModel<float>&, AdamW&, bool) {}

#endif

GpuStepper::~GpuStepper() = default;

}  // namespace px
