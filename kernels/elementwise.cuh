#pragma once
// Small element-wise and reduction helpers of the whole-model GPU path (CudaModel):
// residual adds across dtypes, RMSNorm from an fp32 residual to bf16 GEMM operands, and a
// deterministic two-stage sum of squares (gradient norm).
#include "cuda_common.cuh"

namespace px::cuda {

#ifdef __CUDACC__
// 8 consecutive elements <-> 8 floats: bf16 one 16-byte access, fp32 two (the pointer must be
// 16-byte aligned). Used by the vectorised row kernels (rope, rmsnorm, permute/combine).
__device__ __forceinline__ void load8(const float* p, float* v) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const bf16* p, float* v) {
  const uint4 a = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&a);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(h[j]);
    v[2 * j] = f.x, v[2 * j + 1] = f.y;
  }
}
__device__ __forceinline__ void store8(float* p, const float* v) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(bf16* p, const float* v) {
  uint4 a;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&a);
#pragma unroll
  for (int j = 0; j < 4; ++j) h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  *reinterpret_cast<uint4*>(p) = a;
}
#endif  // __CUDACC__

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// y[i] += x[i], n elements (x fp32 or bf16).
template <class T>
void add_inplace(float* y, const T* x, size_t n, cudaStream_t stream = 0);
// out[i] = a[i] + b[i] (b fp32 or bf16); out may alias a.
template <class T>
void add(float* out, const float* a, const T* b, size_t n, cudaStream_t stream = 0);

// RMSNorm (eps 1e-5) of fp32 rows, same math as rmsnorm_forward: writes the bf16 result
// (the GEMM operand), optionally the fp32 result too (out_f32 may be null), and rstd[N].
void rmsnorm_forward_cast(bf16* out_bf16, float* out_f32, float* rstd, const float* x,
                          const float* g, int N, int d, cudaStream_t stream = 0);

// Sum of squares, stage 1: partials[0 .. kSumSqBlocks) = per-block sums of x[i]^2 over a
// fixed grid (deterministic). Stage 2 (sum_finish) adds `count` partials in a fixed order.
constexpr int kSumSqBlocks = 512;
void sum_squares_partial(float* partials, const float* x, size_t n, cudaStream_t stream = 0);
// norm_out[0] = sqrt(sum partials[0..count)); scale_out[0] = clip / norm when clip > 0 and
// norm > clip, else 1 (global-norm gradient clipping, as px::AdamW). clip is read on the
// device (clip[0]) so that a captured CUDA graph can be replayed with new values.
void grad_clip_finish(float* norm_out, float* scale_out, const float* partials, int count,
                      const float* clip, cudaStream_t stream = 0);

// ---- dense FFN / shared experts on cuBLASLt (CudaModel) -------------------------------------
// The FFN y = act(x W1, x W3) W2 runs as plain GEMMs on a concatenated weight: W13 [d, 2f] holds
// row i = [W1[i, :] | W3[i, :]] (interleave_cols), so that ONE GEMM gives AB = x W13 [N, 2f]
// (row n = [a | b]) and ONE GEMM gives dx = dAB W13^T. f % 8 == 0, 16-byte aligned pointers.
// out [rows, 2f]: row r = [a[r, :] | b[r, :]] (a, b [rows, f]).
void interleave_cols(bf16* out, const bf16* a, const bf16* b, int rows, int f,
                     cudaStream_t stream = 0);
// ga[r, :] += cat[r, 0:f], gb[r, :] += cat[r, f:2f] (fp32; cat [rows, 2f]).
void deinterleave_add(float* ga, float* gb, const float* cat, int rows, int f,
                      cudaStream_t stream = 0);
// glu: act = silu(a) * b from ab [rows, 2f] (row = [a | b]); else (relu2) act = relu(a)^2 from
// ab = a [rows, f]. Same math as the grouped expert kernel's epilogue (bf16 a, b; fp32 math;
// sigmoid 1 / (1 + __expf(-a))). act [rows, f].
void ffn_act_forward(bf16* act, const bf16* ab, int rows, int f, bool glu,
                     cudaStream_t stream = 0);
// Backward of ffn_act_forward: glu: dab [rows, 2f] = [dact b s (1 + a (1 - s)) | dact a s]
// (s = sigmoid(a)); relu2: dab [rows, f] = dact 2 relu(a). dact [rows, f].
void ffn_act_backward(bf16* dab, const bf16* dact, const bf16* ab, int rows, int f, bool glu,
                      cudaStream_t stream = 0);

}  // namespace px::cuda
