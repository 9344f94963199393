// defines: add_inplace, add, rmsnorm_forward_cast, sum_squares_partial, grad_clip_finish
#include "elementwise.cuh"

#include "rmsnorm.cuh"  // defines: rmsnorm_forward_cast_vec, rmsnorm_vec_ok

namespace px::cuda {

namespace {

int grid_for(size_t n) {
  size_t g = (n + 255) / 256;
  return (int)(g < 65535 * 8 ? (g ? g : 1) : 65535 * 8);
}

template <class T>
__global__ void add_kernel(float* out, const float* a, const T* b, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = a[i] + to_float(b[i]);
}

__global__ void rmsnorm_cast_kernel(bf16* ob, float* of, float* rstd, const float* x,
                                    const float* g, int d) {
  const float* xr = x + (size_t)blockIdx.x * d;
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss);
  float r = rsqrtf(ss / d + 1e-5f);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  size_t o = (size_t)blockIdx.x * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float v = xr[i] * r * g[i];
    ob[o + i] = __float2bfloat16(v);
    if (of) of[o + i] = v;
  }
}

__global__ void sumsq_kernel(float* partials, const float* x, size_t n) {
  float s = 0.f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    s += x[i] * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void clip_finish_kernel(float* norm_out, float* scale_out, const float* partials,
                                   int count, const float* clip_p) {
  const float clip = clip_p[0];
  double s = 0;  // one thread, fixed order: deterministic
  for (int i = 0; i < count; ++i) s += partials[i];
  double norm = sqrt(s);
  norm_out[0] = (float)norm;
  scale_out[0] = clip > 0 && norm > clip ? (float)(clip / norm) : 1.f;
}

}  // namespace

template <class T>
void add_inplace(float* y, const T* x, size_t n, cudaStream_t stream) {
  add<T>(y, y, x, n, stream);
}

template <class T>
void add(float* out, const float* a, const T* b, size_t n, cudaStream_t stream) {
  if (!n) return;
  add_kernel<T><<<grid_for(n), 256, 0, stream>>>(out, a, b, n);
  cudaCheckLaunch();
}

void rmsnorm_forward_cast(bf16* out_bf16, float* out_f32, float* rstd, const float* x,
                          const float* g, int N, int d, cudaStream_t stream) {
  if (N <= 0) return;
  if (rmsnorm_vec_ok(d, out_bf16, out_f32, x, g))
    return rmsnorm_forward_cast_vec(out_bf16, out_f32, rstd, x, g, N, d, stream);
  int threads = d >= 1024 ? 512 : (d >= 256 ? 256 : 128);
  rmsnorm_cast_kernel<<<N, threads, 0, stream>>>(out_bf16, out_f32, rstd, x, g, d);
  cudaCheckLaunch();
}

void sum_squares_partial(float* partials, const float* x, size_t n, cudaStream_t stream) {
  sumsq_kernel<<<kSumSqBlocks, 256, 0, stream>>>(partials, x, n);
  cudaCheckLaunch();
}

void grad_clip_finish(float* norm_out, float* scale_out, const float* partials, int count,
                      const float* clip, cudaStream_t stream) {
  clip_finish_kernel<<<1, 1, 0, stream>>>(norm_out, scale_out, partials, count, clip);
  cudaCheckLaunch();
}

template void add_inplace<float>(float*, const float*, size_t, cudaStream_t);
template void add_inplace<bf16>(float*, const bf16*, size_t, cudaStream_t);
template void add<float>(float*, const float*, const float*, size_t, cudaStream_t);
template void add<bf16>(float*, const float*, const bf16*, size_t, cudaStream_t);

}  // namespace px::cuda
