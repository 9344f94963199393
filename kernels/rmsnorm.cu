// defines: rmsnorm_forward, rmsnorm_backward
#include "rmsnorm.cuh"

namespace px::cuda {

namespace {

template <class T>
__global__ void rmsnorm_fwd_kernel(T* out, float* rstd, const T* x, const float* g, int d) {
  const T* xr = x + (size_t)blockIdx.x * d;
  float ss = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float v = to_float(xr[i]);
    ss += v * v;
  }
  ss = block_sum(ss);
  float r = rsqrtf(ss / d + 1e-5f);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  T* o = out + (size_t)blockIdx.x * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = from_float<T>(to_float(xr[i]) * r * g[i]);
}

// dx_i = r g_i dy_i - x_i r^3 / d * sum_j dy_j g_j x_j
template <class T>
__global__ void rmsnorm_bwd_dx_kernel(T* dx, const T* dout, const T* x, const float* g,
                                      const float* rstd, int d) {
  size_t o = (size_t)blockIdx.x * d;
  float r = rstd[blockIdx.x], dot = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x)
    dot += to_float(dout[o + i]) * g[i] * to_float(x[o + i]);
  dot = block_sum(dot);
  float c = r * r * r * dot / d;
  for (int i = threadIdx.x; i < d; i += blockDim.x)
    dx[o + i] = from_float<T>(r * g[i] * to_float(dout[o + i]) - c * to_float(x[o + i]));
}

// dg_i += sum_n dy[n,i] x[n,i] r[n]: block of 32 columns x 8 row-groups, fixed order.
template <class T>
__global__ void rmsnorm_bwd_dg_kernel(float* dg, const T* dout, const T* x, const float* rstd,
                                      int N, int d) {
  __shared__ float part[8][33];
  int col = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (col < d)
    for (int n = threadIdx.y; n < N; n += 8)
      s += to_float(dout[(size_t)n * d + col]) * to_float(x[(size_t)n * d + col]) * rstd[n];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    float t = 0.f;
    for (int j = 0; j < 8; ++j) t += part[j][threadIdx.x];
    dg[col] += t;
  }
}

int threads_for(int d) { return d >= 1024 ? 512 : (d >= 256 ? 256 : 128); }

}  // namespace

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const float* g, int N, int d,
                     cudaStream_t stream) {
  if (N <= 0) return;
  rmsnorm_fwd_kernel<<<N, threads_for(d), 0, stream>>>(out, rstd, x, g, d);
  cudaCheckLaunch();
}

template <class T>
void rmsnorm_backward(T* dx, float* dg, const T* dout, const T* x, const float* g,
                      const float* rstd, int N, int d, cudaStream_t stream) {
  if (N <= 0) return;
  rmsnorm_bwd_dx_kernel<<<N, threads_for(d), 0, stream>>>(dx, dout, x, g, rstd, d);
  cudaCheckLaunch();
  if (dg) {
    rmsnorm_bwd_dg_kernel<<<ceil_div(d, 32), dim3(32, 8), 0, stream>>>(dg, dout, x, rstd, N, d);
    cudaCheckLaunch();
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, cudaStream_t);
template void rmsnorm_forward<bf16>(bf16*, float*, const bf16*, const float*, int, int, cudaStream_t);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int, int, cudaStream_t);
template void rmsnorm_backward<bf16>(bf16*, float*, const bf16*, const bf16*, const float*,
                                     const float*, int, int, cudaStream_t);

}  // namespace px::cuda
