// HomeState: an expert home's masters, gradient sum and AdamW moments on the GPU.
#include "home_state.cuh"

#include <algorithm>

#include "adamw.cuh"       // defines: adamw_update
#include "expert_ffn.cuh"  // defines: expert_ffn_forward, expert_ffn_backward
#include "wire/bf16.hpp"   // defines: bf16_encode_rne_n

namespace px::cuda {

namespace {

constexpr int kPartials = 512, kThreads = 256;

// partials[block] = the number of nonzero g in a fixed grid's share (as a float)
__global__ void nonzero_kernel(float* partials, const float* g, size_t n) {
  float c = 0.f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    c += g[i] != 0.f ? 1.f : 0.f;
  c = block_sum(c);
  if (threadIdx.x == 0) partials[blockIdx.x] = c;
}

// g *= s; partials[block] = sum of the scaled squares in a fixed grid's share
__global__ void scale_sumsq_kernel(float* partials, float* g, size_t n, float s, bool sum) {
  float acc = 0.f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float x = g[i] * s;
    g[i] = x;
    acc += x * x;
  }
  if (!sum) return;
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void add_kernel(float* y, const float* x, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    y[i] += x[i];
}

double sum_partials(const float* partials, cudaStream_t st) {
  float host[kPartials];
  cudaCheck(cudaMemcpyAsync(host, partials, sizeof host, cudaMemcpyDeviceToHost, st));
  cudaCheck(cudaStreamSynchronize(st));
  double s = 0;
  for (float p : host) s += p;  // fixed order: deterministic
  return s;
}

}  // namespace

HomeState::HomeState(size_t experts, int d, int h, bool swiglu)
    : d_(d), h_(h), swiglu_(swiglu), per_((size_t)(swiglu ? 3 : 2) * d * h), n_(experts * per_) {
  cudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  const size_t bytes = std::max<size_t>(n_, 1) * sizeof(float);
  for (float** p : {&masters_, &grads_, &m_, &v_}) {
    cudaCheck(cudaMalloc(p, bytes));
    cudaCheck(cudaMemset(*p, 0, bytes));
  }
  cudaCheck(cudaMalloc(&wbf_, std::max<size_t>(n_, 1) * sizeof(bf16)));
  cudaCheck(cudaMalloc(&partials_, kPartials * sizeof(float)));
  cudaCheck(cudaMalloc(&bounds_, 2 * sizeof(int32_t)));
}

HomeState::~HomeState() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (void* p : {(void*)masters_, (void*)grads_, (void*)m_, (void*)v_, (void*)wbf_,
                  (void*)partials_, (void*)bounds_, (void*)x_, (void*)dy_, (void*)y_, (void*)dx_,
                  (void*)a_, (void*)b_, (void*)act_, (void*)da_, (void*)db_})
    if (p) cudaFree(p);
  if (stream_) cudaStreamDestroy(stream_);
}

void HomeState::upload(const float* masters, const float* grads, const float* m, const float* v) {
  for (auto [src, dst] : {std::pair{masters, masters_}, {grads, grads_}, {m, m_}, {v, v_}})
    if (src && n_) cudaCheck(cudaMemcpyAsync(dst, src, n_ * sizeof(float), cudaMemcpyHostToDevice, stream_));
  if (masters) convert_f32_to_bf16(wbf_, masters_, n_, stream_);
  cudaCheck(cudaStreamSynchronize(stream_));
}

void HomeState::download(float* masters, float* grads, float* m, float* v) const {
  for (auto [src, dst] : {std::pair{(const float*)masters_, masters}, {(const float*)grads_, grads},
                          {(const float*)m_, m}, {(const float*)v_, v}})
    if (dst && n_) cudaCheck(cudaMemcpyAsync(dst, src, n_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
}

void HomeState::reserve_rows(int rows) {
  if (rows <= rows_cap_) return;
  const int cap = std::max(rows, 2 * rows_cap_);
  for (bf16** p : {&x_, &dy_, &y_, &dx_, &a_, &b_, &act_, &da_, &db_}) {
    if (*p) cudaCheck(cudaFree(*p));
    *p = nullptr;
  }
  for (bf16** p : {&x_, &dy_, &y_, &dx_}) cudaCheck(cudaMalloc(p, (size_t)cap * d_ * sizeof(bf16)));
  for (bf16** p : {&a_, &b_, &act_, &da_, &db_}) cudaCheck(cudaMalloc(p, (size_t)cap * h_ * sizeof(bf16)));
  rows_cap_ = cap;
}

void HomeState::accumulate_rows(int slot, const float* X, const float* dY, int rows) {
  if (rows <= 0) return;
  reserve_rows(rows);
  const size_t nx = (size_t)rows * d_, wsz = (size_t)d_ * h_;
  cudaCheck(cudaStreamSynchronize(stream_));  // (the pinned rows are free)
  host_x_.reserve_discard(nx);
  host_dy_.reserve_discard(nx);
  bf16_encode_rne_n(X, nx, host_x_.data());
  cudaCheck(cudaMemcpyAsync(x_, host_x_.data(), nx * sizeof(bf16), cudaMemcpyHostToDevice, stream_));
  bf16_encode_rne_n(dY, nx, host_dy_.data());  // (while X's rows travel)
  cudaCheck(cudaMemcpyAsync(dy_, host_dy_.data(), nx * sizeof(bf16), cudaMemcpyHostToDevice, stream_));
  const int32_t bounds[2] = {0, rows};
  cudaCheck(cudaMemcpyAsync(bounds_, bounds, sizeof bounds, cudaMemcpyHostToDevice, stream_));
  const bf16* w = wbf_ + (size_t)slot * per_;
  float* g = grads_ + (size_t)slot * per_;
  const bf16 *W1 = w, *W3 = swiglu_ ? w + wsz : nullptr, *W2 = w + per_ - wsz;
  const ExpertAct kind = swiglu_ ? px::cpu::EXPERT_ACT_SWIGLU : px::cpu::EXPERT_ACT_RELU2;
  expert_ffn_forward(y_, a_, swiglu_ ? b_ : nullptr, act_, x_, W1, W3, W2, bounds_, rows, 1, d_,
                     h_, kind, stream_);
  expert_ffn_backward(dx_, g, swiglu_ ? g + wsz : nullptr, g + per_ - wsz, dy_, x_, a_,
                      swiglu_ ? b_ : nullptr, act_, W1, W3, W2, bounds_, rows, 1, d_, h_, kind,
                      da_, db_, stream_);
  cudaCheck(cudaStreamSynchronize(stream_));  // (the host rows may go)
}

void HomeState::add_grad(size_t offset, const float* g, size_t n) {
  if (!n) return;
  float* tmp = nullptr;
  cudaCheck(cudaMallocAsync((void**)&tmp, n * sizeof(float), stream_));
  cudaCheck(cudaMemcpyAsync(tmp, g, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
  add_kernel<<<kPartials, kThreads, 0, stream_>>>(grads_ + offset, tmp, n);
  cudaCheckLaunch();
  cudaCheck(cudaFreeAsync(tmp, stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
}

bool HomeState::any_grad() {
  nonzero_kernel<<<kPartials, kThreads, 0, stream_>>>(partials_, grads_, n_);
  cudaCheckLaunch();
  return sum_partials(partials_, stream_) > 0;
}

double HomeState::scale_grads_sum_squares(float inv) {
  scale_sumsq_kernel<<<kPartials, kThreads, 0, stream_>>>(partials_, grads_, n_, inv, true);
  cudaCheckLaunch();
  return sum_partials(partials_, stream_);
}

void HomeState::scale_grads(float s) {
  scale_sumsq_kernel<<<kPartials, kThreads, 0, stream_>>>(partials_, grads_, n_, s, false);
  cudaCheckLaunch();
  cudaCheck(cudaStreamSynchronize(stream_));
}

void HomeState::adamw_step(float lr, float wd, int step) {
  adamw_update<float>(masters_, grads_, m_, v_, n_, lr, 0.9f, 0.95f, 1e-8f, wd, step, wbf_, stream_);
  cudaCheck(cudaStreamSynchronize(stream_));
}

void HomeState::zero_grads() {
  if (n_) cudaCheck(cudaMemsetAsync(grads_, 0, n_ * sizeof(float), stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
}

}  // namespace px::cuda
