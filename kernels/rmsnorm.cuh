#pragma once
// RMSNorm (eps 1e-5), same contract as px::cpu::rmsnorm_forward/backward:
// out = x * rstd * g, rstd[N] saved. x/out/dout/dx in T (float or bf16), g, dg, rstd fp32.
// dg is ACCUMULATED (+=), deterministic (column reduction, no atomics); dx assigned.
#include "cuda_common.cuh"

namespace px::cuda {

template <class T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const float* g, int N, int d,
                     cudaStream_t stream = 0);
template <class T>
void rmsnorm_backward(T* dx, float* dg, const T* dout, const T* x, const float* g,
                      const float* rstd, int N, int d, cudaStream_t stream = 0);

}  // namespace px::cuda
