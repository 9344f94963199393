// defines: add_inplace, add, interleave_cols, deinterleave_add, ffn_act_forward,
// ffn_act_backward, rmsnorm_forward_cast, sum_squares_partial, grad_clip_finish
#include "elementwise.cuh"

#include <initializer_list>

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

__device__ __forceinline__ float sigmoid_fast(float x) { return 1.f / (1.f + __expf(-x)); }

// One thread per 8-column chunk of a [rows, f] index space (f % 8 == 0).
__global__ void interleave_kernel(bf16* out, const bf16* a, const bf16* b, size_t chunks,
                                  int fc) {
  for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < chunks;
       j += (size_t)gridDim.x * blockDim.x) {
    const size_t r = j / fc, c = (j % fc) * 8, f = (size_t)fc * 8;
    const size_t i = r * f + c, o = r * 2 * f + c;
    *reinterpret_cast<uint4*>(out + o) = *reinterpret_cast<const uint4*>(a + i);
    *reinterpret_cast<uint4*>(out + o + f) = *reinterpret_cast<const uint4*>(b + i);
  }
}

__global__ void deinterleave_add_kernel(float* ga, float* gb, const float* cat, size_t chunks,
                                        int fc) {
  for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < chunks;
       j += (size_t)gridDim.x * blockDim.x) {
    const size_t r = j / fc, c = (j % fc) * 8, f = (size_t)fc * 8;
    const size_t i = r * f + c, o = r * 2 * f + c;
    float x[8], y[8];
    load8(cat + o, x);
    load8(ga + i, y);
#pragma unroll
    for (int t = 0; t < 8; ++t) y[t] += x[t];
    store8(ga + i, y);
    load8(cat + o + f, x);
    load8(gb + i, y);
#pragma unroll
    for (int t = 0; t < 8; ++t) y[t] += x[t];
    store8(gb + i, y);
  }
}

template <bool GLU>
__global__ void ffn_act_fwd_kernel(bf16* act, const bf16* ab, size_t chunks, int fc) {
  for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < chunks;
       j += (size_t)gridDim.x * blockDim.x) {
    const size_t r = j / fc, c = (j % fc) * 8, f = (size_t)fc * 8;
    float a[8], o[8];
    if constexpr (GLU) {
      float b[8];
      load8(ab + r * 2 * f + c, a);
      load8(ab + r * 2 * f + f + c, b);
#pragma unroll
      for (int t = 0; t < 8; ++t) o[t] = a[t] * sigmoid_fast(a[t]) * b[t];
    } else {
      load8(ab + r * f + c, a);
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const float x = fmaxf(a[t], 0.f);
        o[t] = x * x;
      }
    }
    store8(act + r * f + c, o);
  }
}

template <bool GLU>
__global__ void ffn_act_bwd_kernel(bf16* dab, const bf16* dact, const bf16* ab, size_t chunks,
                                   int fc) {
  for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < chunks;
       j += (size_t)gridDim.x * blockDim.x) {
    const size_t r = j / fc, c = (j % fc) * 8, f = (size_t)fc * 8;
    float g[8], a[8], da[8];
    load8(dact + r * f + c, g);
    if constexpr (GLU) {
      float b[8], db[8];
      load8(ab + r * 2 * f + c, a);
      load8(ab + r * 2 * f + f + c, b);
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const float s = sigmoid_fast(a[t]);
        da[t] = g[t] * b[t] * s * (1.f + a[t] * (1.f - s));
        db[t] = g[t] * a[t] * s;
      }
      store8(dab + r * 2 * f + c, da);
      store8(dab + r * 2 * f + f + c, db);
    } else {
      load8(ab + r * f + c, a);
#pragma unroll
      for (int t = 0; t < 8; ++t) da[t] = g[t] * 2.f * fmaxf(a[t], 0.f);
      store8(dab + r * f + c, da);
    }
  }
}

void check_ffn_args(int f, std::initializer_list<const void*> ptrs) {
  bool ok = f % 8 == 0;
  for (const void* p : ptrs) ok = ok && aligned16(p);
  if (!ok) cuda_fail("ffn elementwise", "f % 8 != 0 or a pointer not 16-byte aligned", __FILE__,
                     __LINE__);
}

}  // namespace

void interleave_cols(bf16* out, const bf16* a, const bf16* b, int rows, int f,
                     cudaStream_t stream) {
  if (rows <= 0 || f <= 0) return;
  check_ffn_args(f, {out, a, b});
  const size_t chunks = (size_t)rows * (f / 8);
  interleave_kernel<<<grid_for(chunks), 256, 0, stream>>>(out, a, b, chunks, f / 8);
  cudaCheckLaunch();
}

void deinterleave_add(float* ga, float* gb, const float* cat, int rows, int f,
                      cudaStream_t stream) {
  if (rows <= 0 || f <= 0) return;
  check_ffn_args(f, {ga, gb, cat});
  const size_t chunks = (size_t)rows * (f / 8);
  deinterleave_add_kernel<<<grid_for(chunks), 256, 0, stream>>>(ga, gb, cat, chunks, f / 8);
  cudaCheckLaunch();
}

void ffn_act_forward(bf16* act, const bf16* ab, int rows, int f, bool glu, cudaStream_t stream) {
  if (rows <= 0 || f <= 0) return;
  check_ffn_args(f, {act, ab});
  const size_t chunks = (size_t)rows * (f / 8);
  if (glu)
    ffn_act_fwd_kernel<true><<<grid_for(chunks), 256, 0, stream>>>(act, ab, chunks, f / 8);
  else
    ffn_act_fwd_kernel<false><<<grid_for(chunks), 256, 0, stream>>>(act, ab, chunks, f / 8);
  cudaCheckLaunch();
}

void ffn_act_backward(bf16* dab, const bf16* dact, const bf16* ab, int rows, int f, bool glu,
                      cudaStream_t stream) {
  if (rows <= 0 || f <= 0) return;
  check_ffn_args(f, {dab, dact, ab});
  const size_t chunks = (size_t)rows * (f / 8);
  if (glu)
    ffn_act_bwd_kernel<true><<<grid_for(chunks), 256, 0, stream>>>(dab, dact, ab, chunks, f / 8);
  else
    ffn_act_bwd_kernel<false><<<grid_for(chunks), 256, 0, stream>>>(dab, dact, ab, chunks,
                                                                    f / 8);
  cudaCheckLaunch();
}

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
