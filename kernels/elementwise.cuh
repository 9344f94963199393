#pragma once
// Small element-wise and reduction helpers of the whole-model GPU path (CudaModel):
// residual adds across dtypes, RMSNorm from an fp32 residual to bf16 GEMM operands, and a
// deterministic two-stage sum of squares (gradient norm).
#include "cuda_common.cuh"

namespace px::cuda {

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

}  // namespace px::cuda
