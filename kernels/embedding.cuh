#pragma once
// Token embedding lookup (fp32 table [V, d], int32 tokens [N]) and its backward.
#include "cuda_common.cuh"

namespace px::cuda {

// x[n] = table[tokens[n]], x [N, d].
void embedding_forward(float* x, const float* table, const int32_t* tokens, int N, int d,
                       cudaStream_t stream = 0);
// dtable[tokens[n]] += dx[n] (fp32 atomics: the summation order of repeated tokens is not
// fixed, so results may differ in the last bits between runs).
void embedding_backward(float* dtable, const float* dx, const int32_t* tokens, int N, int d,
                        cudaStream_t stream = 0);

}  // namespace px::cuda
