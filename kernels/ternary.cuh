#pragma once
// Ternary views of expert weights (DESIGN §6): W [in, out] (fp32, applied as x W) becomes
// codes in {-1, 0, +1} with one fp32 absmean scale per output unit j:
//   s_j = mean_i |W[i, j]|,  t_ij = clamp(rint(W[i, j] / s_j), -1, 1)   (s_j = 0 -> t = 0).
// Packed 2 bits/weight, output-unit major: packed[j * (in/16) + i/16] holds i%16 at bits
// 2*(i%16): code 0 -> 0, 1 -> +1, 2 -> -1. in must be a multiple of 16.
#include "cuda_common.cuh"

namespace px::cuda {

inline __host__ __device__ int ternary_decode(uint32_t word, int i) {
  uint32_t c = (word >> (2 * i)) & 3u;
  return c == 1u ? 1 : (c == 2u ? -1 : 0);
}

// packed [out, in/16] uint32, scale [out].
void ternary_pack(uint32_t* packed, float* scale, const float* W, int in, int out,
                  cudaStream_t stream = 0);
// W [in, out] = t * s (T = float or bf16).
template <class T>
void ternary_unpack(T* W, const uint32_t* packed, const float* scale, int in, int out,
                    cudaStream_t stream = 0);
// Y[M, out] (fp32, assigned or accumulated) = X[M, in] (bf16) * (t * s), fp32 accumulate.
void ternary_matmul(float* Y, const bf16* X, const uint32_t* packed, const float* scale, int M,
                    int in, int out, bool accumulate, cudaStream_t stream = 0);

}  // namespace px::cuda
