#pragma once
// An expert home's state on one GPU (experts.home_device = "cuda", experts/gpu_home_device):
// fp32 masters with their bf16 compute copy, the fp32 gradient sum and AdamW moments of K
// experts packed [W1 | W3 | W2] per expert (d x h, d x h, h x d), and the home's arithmetic:
// an expert's weight gradient over sketch rows through the grouped expert FFN kernels
// (expert_ffn.cuh: bf16 operands, fp32 accumulation into the gradient sum), and the update's
// pieces (ExpertHome::update) as deterministic kernels. No MPI, no host model.
#include <cstddef>
#include <cstdint>

#include "cuda_common.cuh"    // defines: bf16, cudaStream_t
#include "pinned_buffer.cuh"  // defines: PinnedBuffer

namespace px::cuda {

class HomeState {
 public:
  HomeState(size_t experts, int d, int h, bool swiglu);
  ~HomeState();
  HomeState(const HomeState&) = delete;
  HomeState& operator=(const HomeState&) = delete;

  size_t size() const { return n_; }  // floats per array (experts * per-expert)
  // host <-> device, n_ floats each; null: skipped. upload refreshes the bf16 copy.
  void upload(const float* masters, const float* grads, const float* m, const float* v);
  void download(float* masters, float* grads, float* m, float* v) const;
  // grads of expert `slot` += weight gradient of the FFN over rows X, dY [rows, d] (host fp32,
  // rounded to bf16 for the GEMMs)
  void accumulate_rows(int slot, const float* X, const float* dY, int rows);
  void add_grad(size_t offset, const float* g, size_t n);  // host g
  bool any_grad();
  double scale_grads_sum_squares(float inv);  // the partial sums added on the host in double
  void scale_grads(float s);
  // AdamW (betas 0.9 / 0.95, eps 1e-8) of every master, weight decay wd; refreshes bf16 copy
  void adamw_step(float lr, float wd, int step);
  void zero_grads();

 private:
  void reserve_rows(int rows);
  int d_, h_;
  bool swiglu_;
  size_t per_, n_;
  cudaStream_t stream_ = nullptr;
  float *masters_ = nullptr, *grads_ = nullptr, *m_ = nullptr, *v_ = nullptr;
  bf16* wbf_ = nullptr;
  float* partials_ = nullptr;  // [kPartials]
  int rows_cap_ = 0;
  bf16 *x_ = nullptr, *dy_ = nullptr, *y_ = nullptr, *dx_ = nullptr;     // [rows, d]
  bf16 *a_ = nullptr, *b_ = nullptr, *act_ = nullptr, *da_ = nullptr, *db_ = nullptr;  // [rows, h]
  int32_t* bounds_ = nullptr;  // [2]
  PinnedBuffer<uint16_t> host_x_, host_dy_;  // [rows, d] bf16 bits of the staged rows
};

}  // namespace px::cuda
