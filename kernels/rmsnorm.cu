// defines: rmsnorm_forward, rmsnorm_backward, rmsnorm_backward_fused, rmsnorm_fwd_vec_launch
#include "rmsnorm.cuh"

#include <algorithm>
#include <initializer_list>

#include "elementwise.cuh"  // defines: load8, store8, aligned16

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


// ---- vectorised kernels (d % 8 == 0, 16-byte aligned rows) --------------------------------
// A thread owns CPT chunks of 8 columns (chunk c = threadIdx.x + j * blockDim.x) and keeps
// them in registers, so every row is read once.

// One block per row: out = x * rstd * g (TO), optionally an fp32 copy too.
template <class TI, class TO, int CPT>
__global__ void rmsnorm_fwd_vec_kernel(TO* out, float* out_f32, float* rstd, const TI* x,
                                       const float* g, int d) {
  const int chunks = d / 8;
  const size_t o = (size_t)blockIdx.x * d;
  float v[CPT][8];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) {
      load8(x + o + c * 8, v[j]);
#pragma unroll
      for (int u = 0; u < 8; ++u) ss += v[j][u] * v[j][u];
    }
  }
  ss = block_sum(ss);
  const float r = rsqrtf(ss / d + 1e-5f);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) {
      float gv[8], y[8];
      load8(g + c * 8, gv);
#pragma unroll
      for (int u = 0; u < 8; ++u) y[u] = v[j][u] * r * gv[u];
      store8(out + o + c * 8, y);
      if (out_f32) store8(out_f32 + o + c * 8, y);
    }
  }
}

// Backward over a fixed range of rows per block (deterministic for a given N):
// dx = r g dy - x r^3/d <dy g, x> (+ residual), optional bf16 copy of dx; the block's dg
// contribution sum_n dy x r (fixed row order) goes to partial[blockIdx.x, :].
template <class T, int CPT>
__global__ void rmsnorm_bwd_vec_kernel(T* dx, bf16* dx_bf, float* partial, const T* dout,
                                       const T* x, const float* g, const float* rstd,
                                       const float* resid, int N, int d, int rows_per_block) {
  const int chunks = d / 8;
  float gv[CPT][8], acc[CPT][8];
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
#pragma unroll
    for (int u = 0; u < 8; ++u) acc[j][u] = 0.f, gv[j][u] = 0.f;
    if (c < chunks) load8(g + c * 8, gv[j]);
  }
  const int n0 = blockIdx.x * rows_per_block, n1 = min(N, n0 + rows_per_block);
  for (int n = n0; n < n1; ++n) {
    const size_t o = (size_t)n * d;
    const float r = rstd[n];
    float dy[CPT][8], xv[CPT][8];
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      if (c < chunks) {
        load8(dout + o + c * 8, dy[j]);
        load8(x + o + c * 8, xv[j]);
#pragma unroll
        for (int u = 0; u < 8; ++u) dot += dy[j][u] * gv[j][u] * xv[j][u];
      }
    }
    dot = block_sum(dot);
    const float cc = r * r * r * dot / d;
#pragma unroll
    for (int j = 0; j < CPT; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      if (c < chunks) {
        float o8[8], rs[8];
        if (resid) load8(resid + o + c * 8, rs);
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          o8[u] = r * gv[j][u] * dy[j][u] - cc * xv[j][u];
          if (resid) o8[u] += rs[u];
          acc[j][u] += dy[j][u] * xv[j][u] * r;
        }
        store8(dx + o + c * 8, o8);
        if (dx_bf) store8(dx_bf + o + c * 8, o8);
      }
    }
  }
  if (!partial) return;
#pragma unroll
  for (int j = 0; j < CPT; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) store8(partial + (size_t)blockIdx.x * d + c * 8, acc[j]);
  }
}

// dg[col] += sum_b partial[b, col], b in a fixed order (8 strided row groups, then in order).
__global__ void rmsnorm_dg_finish_kernel(float* dg, const float* partial, int G, int d) {
  __shared__ float part[8][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (col < d)
    for (int b = threadIdx.y; b < G; b += 8) s += partial[(size_t)b * d + col];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    float t = 0.f;
    for (int j = 0; j < 8; ++j) t += part[j][threadIdx.x];
    dg[col] += t;
  }
}

constexpr int kBwdBlocks = 1024;  // fixed grid of the backward (rows split evenly)

// chunks per thread and threads for d columns (chunks of 8)
void vec_shape(int d, int& cpt, int& threads) {
  const int chunks = d / 8;
  cpt = chunks <= 256 ? 1 : chunks <= 512 ? 2 : chunks <= 1024 ? 4 : 8;
  threads = ((chunks + cpt - 1) / cpt + 31) / 32 * 32;
}

bool vec_ok(int d, std::initializer_list<const void*> ptrs) {
  if (d % 8 != 0 || d / 8 > 8 * 1024) return false;
  for (const void* p : ptrs)
    if (p && !aligned16(p)) return false;
  return true;
}

template <class TI, class TO>
void fwd_vec(TO* out, float* out_f32, float* rstd, const TI* x, const float* g, int N, int d,
             cudaStream_t stream) {
  int cpt, threads;
  vec_shape(d, cpt, threads);
#define PX_FWD(C) rmsnorm_fwd_vec_kernel<TI, TO, C><<<N, threads, 0, stream>>>(out, out_f32, rstd, x, g, d)
  if (cpt == 1) PX_FWD(1); else if (cpt == 2) PX_FWD(2); else if (cpt == 4) PX_FWD(4); else PX_FWD(8);
#undef PX_FWD
  cudaCheckLaunch();
}

template <class T>
void bwd_vec(T* dx, bf16* dx_bf, float* dg, const T* dout, const T* x, const float* g,
             const float* rstd, const float* resid, int N, int d, float* partial,
             cudaStream_t stream) {
  int cpt, threads;
  vec_shape(d, cpt, threads);
  const int G = std::min(N, kBwdBlocks), rpb = (N + G - 1) / G;
  float* part = dg ? partial : nullptr;
#define PX_BWD(C)                                                                          \
  rmsnorm_bwd_vec_kernel<T, C><<<G, threads, 0, stream>>>(dx, dx_bf, part, dout, x, g, rstd, \
                                                          resid, N, d, rpb)
  if (cpt == 1) PX_BWD(1); else if (cpt == 2) PX_BWD(2); else if (cpt == 4) PX_BWD(4); else PX_BWD(8);
#undef PX_BWD
  cudaCheckLaunch();
  if (dg) {
    rmsnorm_dg_finish_kernel<<<ceil_div(d, 32), dim3(32, 8), 0, stream>>>(dg, partial, G, d);
    cudaCheckLaunch();
  }
}

int threads_for(int d) { return d >= 1024 ? 512 : (d >= 256 ? 256 : 128); }

}  // namespace

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const float* g, int N, int d,
                     cudaStream_t stream) {
  if (N <= 0) return;
  if (vec_ok(d, {out, x, g})) return fwd_vec<T, T>(out, nullptr, rstd, x, g, N, d, stream);
  rmsnorm_fwd_kernel<<<N, threads_for(d), 0, stream>>>(out, rstd, x, g, d);
  cudaCheckLaunch();
}

template <class T>
void rmsnorm_backward(T* dx, float* dg, const T* dout, const T* x, const float* g,
                      const float* rstd, int N, int d, cudaStream_t stream) {
  if (N <= 0) return;
  if (vec_ok(d, {dx, dout, x, g})) {
    // the dg partials come from a stream-ordered allocation (graph capture allowed)
    float* partial = nullptr;
    if (dg)
      cudaCheck(cudaMallocAsync(&partial, rmsnorm_backward_scratch_bytes(N, d), stream));
    bwd_vec<T>(dx, nullptr, dg, dout, x, g, rstd, nullptr, N, d, partial, stream);
    if (partial) cudaCheck(cudaFreeAsync(partial, stream));
    return;
  }
  rmsnorm_bwd_dx_kernel<<<N, threads_for(d), 0, stream>>>(dx, dout, x, g, rstd, d);
  cudaCheckLaunch();
  if (dg) {
    rmsnorm_bwd_dg_kernel<<<ceil_div(d, 32), dim3(32, 8), 0, stream>>>(dg, dout, x, rstd, N, d);
    cudaCheckLaunch();
  }
}

size_t rmsnorm_backward_scratch_bytes(int N, int d) {
  return (size_t)std::max(1, std::min(N, kBwdBlocks)) * d * sizeof(float) + 256;
}

template <class T>
void rmsnorm_backward_fused(T* dx, bf16* dx_bf16, float* dg, const T* dout, const T* x,
                            const float* g, const float* rstd, const float* residual, int N,
                            int d, void* scratch, cudaStream_t stream) {
  if (N <= 0) return;
  if (!vec_ok(d, {dx, dx_bf16, dout, x, g, residual, scratch}))
    cuda_fail("rmsnorm_backward_fused", "needs d % 8 == 0 and 16-byte aligned pointers",
              __FILE__, __LINE__);
  bwd_vec<T>(dx, dx_bf16, dg, dout, x, g, rstd, residual, N, d, static_cast<float*>(scratch),
             stream);
}

void rmsnorm_forward_cast_vec(bf16* out_bf16, float* out_f32, float* rstd, const float* x,
                              const float* g, int N, int d, cudaStream_t stream) {
  fwd_vec<float, bf16>(out_bf16, out_f32, rstd, x, g, N, d, stream);
}

bool rmsnorm_vec_ok(int d, const void* a, const void* b, const void* c, const void* e) {
  return vec_ok(d, {a, b, c, e});
}

template void rmsnorm_backward_fused<float>(float*, bf16*, float*, const float*, const float*,
                                            const float*, const float*, const float*, int, int,
                                            void*, cudaStream_t);
template void rmsnorm_backward_fused<bf16>(bf16*, bf16*, float*, const bf16*, const bf16*,
                                           const float*, const float*, const float*, int, int,
                                           void*, cudaStream_t);
template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, cudaStream_t);
template void rmsnorm_forward<bf16>(bf16*, float*, const bf16*, const float*, int, int, cudaStream_t);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int, int, cudaStream_t);
template void rmsnorm_backward<bf16>(bf16*, float*, const bf16*, const bf16*, const float*,
                                     const float*, int, int, cudaStream_t);

}  // namespace px::cuda
