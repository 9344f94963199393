// GpuStepper: CudaModel when CUDA is compiled in, a clear error otherwise.
#include "backend/gpu_step.hpp"

#include "parallax_config.hpp"  // defines: PARALLAX_HAS_CUDA (when built)
#include "util/errors.hpp"      // defines: UserError

#ifdef PARALLAX_HAS_CUDA
#include "cuda_common.cuh"  // defines: px::cuda::device_available
#include "cuda_model.cuh"   // defines: px::cuda::CudaModel
#endif

namespace px {

#ifdef PARALLAX_HAS_CUDA

struct GpuStepper::Impl {
  cuda::CudaModel model;
  Impl(const ModelConfig& c, int b, int t) : model(c, b, t) {}
};

std::string GpuStepper::device_name() { return cuda::device_name(); }

void GpuStepper::require() {
  if (!cuda::device_available())
    throw UserError("train.device = \"cuda\": no CUDA device is visible on this machine "
                    "(check CUDA_VISIBLE_DEVICES and the driver), or use device = \"cpu\"");
}

GpuStepper::GpuStepper(const ModelConfig& cfg, int batch, int seq) {
  require();
  impl_ = std::make_unique<Impl>(cfg, batch, seq);
}

void GpuStepper::upload(MoeModel<float>& host, AdamW& opt) {
  impl_->model.upload_params(host.params(Arena::BACKBONE), host.params(Arena::EXPERTS));
  impl_->model.upload_optimizer(opt.m(Arena::BACKBONE).data(), opt.m(Arena::EXPERTS).data(),
                                opt.v(Arena::BACKBONE).data(), opt.v(Arena::EXPERTS).data(),
                                opt.steps_taken());
}

void GpuStepper::download(MoeModel<float>& host, AdamW& opt) {
  impl_->model.download_params(host.params(Arena::BACKBONE), host.params(Arena::EXPERTS));
  impl_->model.download_optimizer(opt.m(Arena::BACKBONE).data(), opt.m(Arena::EXPERTS).data(),
                                  opt.v(Arena::BACKBONE).data(), opt.v(Arena::EXPERTS).data());
  opt.set_steps_taken(impl_->model.steps_taken());
}

GpuStepper::Result GpuStepper::step(const int32_t* in, const int32_t* tg, double lr, double clip,
                                    double wd) {
  Result r;
  impl_->model.step(in, tg, (float)lr, (float)clip, (float)wd);
  r.ce = impl_->model.last_ce();
  r.aux = impl_->model.last_aux();
  r.grad_norm = impl_->model.last_grad_norm();
  r.counts = impl_->model.expert_counts();
  return r;
}

double GpuStepper::eval(const int32_t* in, const int32_t* tg) {
  impl_->model.forward_loss(in, tg);
  return impl_->model.last_ce();
}

#else  // no CUDA backend in this build

struct GpuStepper::Impl {};

GpuStepper::GpuStepper(const ModelConfig&, int, int) { require(); }
std::string GpuStepper::device_name() { return ""; }
void GpuStepper::require() {
  throw UserError("train.device = \"cuda\": this build has no CUDA backend (nvcc was not found "
                  "at configure time; build with -DPARALLAX_CUDA=ON on a machine with the CUDA "
                  "toolkit), or use device = \"cpu\"");
}
void GpuStepper::upload(MoeModel<float>&, AdamW&) {}
void GpuStepper::download(MoeModel<float>&, AdamW&) {}
GpuStepper::Result GpuStepper::step(const int32_t*, const int32_t*, double, double, double) {
  return {};
}
double GpuStepper::eval(const int32_t*, const int32_t*) { return 0; }

#endif

GpuStepper::~GpuStepper() = default;

}  // namespace px
