// GpuHomeDevice: cuda::HomeState when CUDA is compiled in, a clear error otherwise.
#include "experts/gpu_home_device.hpp"

#include "backend/gpu_step.hpp"  // defines: select_local_gpu
#include "parallax_config.hpp"       // defines: PARALLAX_HAS_CUDA (when built)
#include "util/errors.hpp"           // defines: UserError

#ifdef PARALLAX_HAS_CUDA
#include "home_state.cuh"   // defines: px::cuda::HomeState
#endif

namespace px {

#ifdef PARALLAX_HAS_CUDA

namespace {
int select_home_device() {
  const int dev = select_local_gpu();
  if (dev < 0)
    throw UserError("experts.home_device = \"cuda\": no CUDA device is visible on this rank "
                    "(check CUDA_VISIBLE_DEVICES and the driver), or use \"cpu\"");
  return dev;
}
}  // namespace

struct GpuHomeDevice::Impl {
  int device;
  cuda::HomeState state;
  Impl(const Config& c, size_t experts)
      : device(select_home_device()),
        state(experts, c.model.d_model, c.model.expert_hidden,
              c.model.expert_act == ExpertActKind::SWIGLU) {}
};

GpuHomeDevice::GpuHomeDevice(const Config& cfg, size_t experts)
    : impl_(std::make_unique<Impl>(cfg, experts)) {}
void GpuHomeDevice::upload(const float* p, const float* g, const float* m, const float* v) {
  impl_->state.upload(p, g, m, v);
}
void GpuHomeDevice::download(float* p, float* g, float* m, float* v) {
  impl_->state.download(p, g, m, v);
}
void GpuHomeDevice::accumulate_rows(int slot, const float* X, const float* dY, int rows) {
  impl_->state.accumulate_rows(slot, X, dY, rows);
}
void GpuHomeDevice::add_grad(size_t offset, const float* g, size_t n) {
  impl_->state.add_grad(offset, g, n);
}
bool GpuHomeDevice::any_grad() { return impl_->state.any_grad(); }
double GpuHomeDevice::scale_grads_sum_squares(float inv) {
  return impl_->state.scale_grads_sum_squares(inv);
}
void GpuHomeDevice::scale_grads(float s) { impl_->state.scale_grads(s); }
void GpuHomeDevice::adamw_step(float lr, float wd, int step) {
  impl_->state.adamw_step(lr, wd, step);
}
void GpuHomeDevice::zero_grads() { impl_->state.zero_grads(); }

#else  // no CUDA backend in this build

struct GpuHomeDevice::Impl {};

GpuHomeDevice::GpuHomeDevice(const Config&, size_t) {
  throw UserError("experts.home_device = \"cuda\": this build has no CUDA backend (nvcc was "
                  "not found at configure time), or use \"cpu\"");
}
void GpuHomeDevice::upload(const float*, const float*, const float*, const float*) {}
void GpuHomeDevice::download(float*, float*, float*, float*) {}
void GpuHomeDevice::accumulate_rows(int, const float*, const float*, int) {}
void GpuHomeDevice::add_grad(size_t, const float*, size_t) {}
bool GpuHomeDevice::any_grad() { return false; }
double GpuHomeDevice::scale_grads_sum_squares(float) { return 0; }
void GpuHomeDevice::scale_grads(float) {}
void GpuHomeDevice::adamw_step(float, float, int) {}
void GpuHomeDevice::zero_grads() {}

#endif

GpuHomeDevice::~GpuHomeDevice() = default;

}  // namespace px
