#pragma once
// Dense GEMM through cuBLASLt, row-major like px::cpu::matmul:
//   C[M,N] = (accumulate ? C : 0) + op(A) op(B),  A [M,K] (or [K,M] if transA),
//   B [K,N] (or [N,K] if transB). Always fp32 accumulation (CUBLAS_COMPUTE_32F, no TF32).
// The algorithm is chosen once per (device, shape, dtypes, transposes, accumulate) key by
// the cuBLASLt heuristic and cached; one 32 MiB workspace per device is reused.
#include "cuda_common.cuh"

namespace px::cuda {

enum DType : int { DTYPE_F32 = 0, DTYPE_BF16 = 1 };

void matmul_lt(void* C, DType c_type, const void* A, const void* B, DType ab_type, int M, int K,
               int N, bool transA, bool transB, bool accumulate, cudaStream_t stream = 0);

// fp32 in, fp32 out.
void matmul(float* C, const float* A, const float* B, int M, int K, int N, bool transA,
            bool transB, bool accumulate, cudaStream_t stream = 0);
// bf16 in, fp32 out (fp32 accumulate).
void matmul(float* C, const bf16* A, const bf16* B, int M, int K, int N, bool transA,
            bool transB, bool accumulate, cudaStream_t stream = 0);
// bf16 in, bf16 out (fp32 accumulate).
void matmul(bf16* C, const bf16* A, const bf16* B, int M, int K, int N, bool transA,
            bool transB, bool accumulate, cudaStream_t stream = 0);

// Number of distinct cached algorithms (for tests).
size_t matmul_lt_cache_size();
// Frees the handle, workspace and the cache (optional; at exit the OS reclaims them).
void matmul_lt_free();

}  // namespace px::cuda
