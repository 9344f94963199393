#pragma once
// Token permutation for MoE: group the N*k (token, expert) assignments by expert, gather
// token rows into the permuted buffer, and combine expert outputs back (gate-weighted).
// Same contract as px::cpu::moe_permute_build / gather_rows / combine_rows /
// combine_rows_backward / scatter_add_rows (see src/ops/cpu/cpu_ops.hpp), stable order
// (token-major inside each expert segment), deterministic (no float atomics).
#include "cuda_common.cuh"

namespace px::cuda {

// Upper bound of permuted rows for a given alignment: N*k + E*(align-1).
inline long moe_permuted_capacity(int N, int E, int k, int align) {
  return (long)N * k + (long)E * (align > 1 ? align - 1 : 0);
}

// bounds[E+1], pos[N*k], row_token[capacity]. With align > 1 each expert segment starts at
// a multiple of align (e.g. the GEMM tile, 64 or 128 rows); padding rows get row_token = -1
// (gather_rows writes zeros there). bounds[E] = rows used (<= capacity). align = 1 gives
// exactly px::cpu::moe_permute_build. `scratch` needs moe_permute_scratch_bytes(N,E,k).
size_t moe_permute_scratch_bytes(int N, int E, int k);
void moe_permute_build(int32_t* bounds, int32_t* pos, int32_t* row_token, const int32_t* idx,
                       int N, int E, int k, int align, void* scratch, cudaStream_t stream = 0);

// Xp[r] = X[row_token[r]] (zero row where row_token[r] < 0), r < rows.
template <class T>
void gather_rows(T* Xp, const T* X, const int32_t* row_token, int rows, int d,
                 cudaStream_t stream = 0);
// Xp[pos[n*k+j]] = X[n] for all n < N, j < k: the gather of an align = 1 layout written by
// token (each X row read once, written k times). Needs k <= 32, d*sizeof(T) % 16 == 0 and
// 16-byte aligned X, Xp. Rows of an aligned layout's padding are not written.
template <class T>
void permute_rows(T* Xp, const T* X, const int32_t* pos, int N, int k, int d,
                  cudaStream_t stream = 0);
// out[n] += sum_j gates[n,j] * Yp[pos[n*k+j]].
template <class TO, class TY>
void combine_rows(TO* out, const TY* Yp, const float* gates, const int32_t* pos, int N, int k,
                  int d, cudaStream_t stream = 0);
// out[n] = a[n] + b[n] + sum_j gates[n,j] * Yp[pos[n*k+j]] (b may be null; out may alias a):
// combine_rows fused with the residual / shared-expert add. d % 8 == 0, aligned rows.
void combine_rows_add(float* out, const float* a, const bf16* b, const bf16* Yp,
                      const float* gates, const int32_t* pos, int N, int k, int d,
                      cudaStream_t stream = 0);
// dYp[pos[n*k+j]] = gates[n,j] * dout[n]; dgates[n,j] = <dout[n], Yp[pos[n*k+j]]>.
// Padding rows of an aligned layout are not written (the expert backward ignores them only
// if they are zero: clear dYp once, or use align = 1).
template <class TD, class TY>
void combine_rows_backward(TY* dYp, float* dgates, const TD* dout, const TY* Yp,
                           const float* gates, const int32_t* pos, int N, int k, int d,
                           cudaStream_t stream = 0);
// dX[n] += sum_j dXp[pos[n*k+j]]: the scatter-add of px::cpu::scatter_add_rows written as
// a gather through pos (deterministic, no atomics).
template <class TO, class TI>
void scatter_add_rows(TO* dX, const TI* dXp, const int32_t* pos, int N, int k, int d,
                      cudaStream_t stream = 0);

}  // namespace px::cuda
