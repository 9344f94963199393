#pragma once
// Where an expert home's state lives and its arithmetic runs (experts.home_device): the masters,
// the pending gradient sum and the AdamW moments of its K experts, each packed [W1 | W3 | W2]
// (ExpertHome's layout), and the pieces of ExpertHome::update. ExpertHome keeps host vectors of
// the same state as the copy the views, snapshots and checkpoints read; the device is the live
// state (upload at construction and after a resume, download of the masters after every update
// and of everything before a checkpoint). Implementations: HostHomeDevice ("cpu": works in
// place on ExpertHome's vectors, so its sync points do nothing), StagedHomeDevice ("staged": a
// private CPU copy, the CPU home's arithmetic, so CI checks the seam bit for bit) and
// GpuHomeDevice ("cuda": experts/gpu_home_device.cpp).
#include <cstddef>
#include <memory>
#include <vector>

#include "config/config.hpp"       // defines: Config
#include "sketch/sketch_home.hpp"  // defines: HomeExpertSlot

namespace px {

class HomeDevice {
 public:
  virtual ~HomeDevice() = default;
  // The whole state, host -> device / device -> host (K * per floats each; null: skipped).
  virtual void upload(const float* masters, const float* grads, const float* m, const float* v) = 0;
  virtual void download(float* masters, float* grads, float* m, float* v) = 0;
  // grads of expert `slot` += the expert FFN's weight gradient over rows (X, dY [rows, d]).
  virtual void accumulate_rows(int slot, const float* X, const float* dY, int rows) = 0;
  // grads[offset, offset + n) += g (a home learner's exact gradient).
  virtual void add_grad(size_t offset, const float* g, size_t n) = 0;
  // ExpertHome::update's pieces, in its order: whether any gradient is nonzero; grads *= inv
  // and the sum of their squares; grads *= s (clipping); one AdamW step; grads = 0.
  virtual bool any_grad() = 0;
  virtual double scale_grads_sum_squares(float inv) = 0;
  virtual void scale_grads(float s) = 0;
  virtual void adamw_step(float lr, float wd, int step) = 0;
  // One SGD step (masters -= lr (g + wd masters)): the CPU home only; the config refuses SGD
  // with another home device, so the others keep this default, which throws std::logic_error.
  virtual void sgd_step(float lr, float wd);
  virtual void zero_grads() = 0;
};

// ExpertHome's host state, which the "cpu" home device works on in place: n floats each, and
// the sketches' slots over them (the forward weights each sketch's gradient is recomputed with).
struct HomeArrays {
  float *masters = nullptr, *grads = nullptr, *m = nullptr, *v = nullptr;
  size_t n = 0;
  std::vector<HomeExpertSlot> slots;
};

// The home device of cfg.experts.home_device for `experts` experts; "cpu" works on `host`.
std::unique_ptr<HomeDevice> make_home_device(const Config& cfg, size_t experts, HomeArrays host);

}  // namespace px
