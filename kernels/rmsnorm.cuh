#pragma once
// RMSNorm (eps 1e-5), same contract as px::cpu::rmsnorm_forward/backward:
// out = x * rstd * g, rstd[N] saved. x/out/dout/dx in T (float or bf16), g, dg, rstd fp32.
// dg is ACCUMULATED (+=), deterministic (no atomics); dx assigned.
// With d % 8 == 0 and 16-byte aligned pointers: vectorised kernels (16-byte loads, a row held
// in registers, one read per row); the backward runs a fixed grid of blocks over even row
// ranges, writes per-block dg partials and sums them in a fixed order (two-stage); the plain
// rmsnorm_backward takes its partial buffer from cudaMallocAsync on the stream.
#include "cuda_common.cuh"

namespace px::cuda {

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const float* g, int N, int d,
                     cudaStream_t stream = 0);
template <class T>
void rmsnorm_backward(T* dx, float* dg, const T* dout, const T* x, const float* g,
                      const float* rstd, int N, int d, cudaStream_t stream = 0);

// Bytes of `scratch` for rmsnorm_backward_fused (dg partials).
size_t rmsnorm_backward_scratch_bytes(int N, int d);
// rmsnorm_backward with the dg partials in `scratch`, plus: dx = backward + residual[i]
// (residual fp32, may be null) and an optional bf16 copy of dx (dx_bf16 may be null).
// Needs d % 8 == 0 and 16-byte aligned pointers.
template <class T>
void rmsnorm_backward_fused(T* dx, bf16* dx_bf16, float* dg, const T* dout, const T* x,
                            const float* g, const float* rstd, const float* residual, int N,
                            int d, void* scratch, cudaStream_t stream = 0);
// Vectorised forward from fp32 rows to bf16 (+ optional fp32 copy): used by
// rmsnorm_forward_cast (elementwise.cuh) when rmsnorm_vec_ok(d, pointers...).
void rmsnorm_forward_cast_vec(bf16* out_bf16, float* out_f32, float* rstd, const float* x,
                              const float* g, int N, int d, cudaStream_t stream = 0);
bool rmsnorm_vec_ok(int d, const void* a, const void* b, const void* c, const void* e);

}  // namespace px::cuda
