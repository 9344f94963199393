// defines: moe_aux_loss, sum_into, adamw_update_scaled
#include <cmath>

#include "adamw_elem.cuh"  // defines: adamw_elem
#include "cuda_model.cuh"

namespace px::cuda {

namespace {

__global__ void aux_kernel(float* aux_coef, float* loss_acc, const int32_t* counts,
                           const float* prob_mean, int N, int E, int k, float alpha) {
  float part = 0.f;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    float f = (float)counts[e] / ((float)N * k);
    aux_coef[e] = alpha * E * f / N;
    part += alpha * E * f * prob_mean[e];
  }
  part = block_sum(part);
  if (threadIdx.x == 0) loss_acc[0] += part;
}

__global__ void sum_into_kernel(float* out, const float* x, int n, float scale) {
  float s = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = s * scale;
}

__global__ void adamw_scaled_kernel(float* p, const float* g, float* m, float* v, size_t n,
                                    const float* hyper, bool decay, float b1, float b2,
                                    float eps, const float* gscale, bf16* pb) {
  const float sc = gscale ? *gscale : 1.f;
  const float lr = hyper[0], c1 = hyper[1], c2 = hyper[2], wd = decay ? hyper[3] : 0.f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float mi = m[i], vi = v[i];
    const float pi = adamw_elem(p[i], g[i] * sc, mi, vi, lr, b1, b2, eps, wd, c1, c2);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    if (pb) pb[i] = __float2bfloat16(pi);
  }
}

}  // namespace

void moe_aux_loss(float* aux_coef, float* loss_acc, const int32_t* counts,
                  const float* prob_mean, int N, int E, int k, float alpha,
                  cudaStream_t stream) {
  int threads = E >= 1024 ? 1024 : ((E + 31) / 32) * 32;
  aux_kernel<<<1, threads, 0, stream>>>(aux_coef, loss_acc, counts, prob_mean, N, E, k, alpha);
  cudaCheckLaunch();
}

void sum_into(float* out, const float* x, int n, float scale, cudaStream_t stream) {
  sum_into_kernel<<<1, 1024, 0, stream>>>(out, x, n, scale);
  cudaCheckLaunch();
}

void adamw_update_scaled(float* p, const float* g, float* m, float* v, size_t n,
                         const float* hyper, bool decay, float beta1, float beta2, float eps,
                         const float* gscale, bf16* p_bf16, cudaStream_t stream) {
  if (!n) return;
  size_t blocks = (n + 255) / 256;
  if (blocks > 8192) blocks = 8192;
  adamw_scaled_kernel<<<(unsigned)blocks, 256, 0, stream>>>(p, g, m, v, n, hyper, decay, beta1,
                                                            beta2, eps, gscale, p_bf16);
  cudaCheckLaunch();
}

}  // namespace px::cuda
