#pragma once
// Grouped routed-expert FFN (SwiGLU or relu2) on bf16 tensor cores (mma.sync m16n8k16 with
// ldmatrix from swizzled shared memory, fp32 accumulate),
// same math as px::cpu::expert_ffn_forward / expert_ffn_backward. X is the permuted token
// buffer (moe_permute_build + gather_rows): expert e owns rows [bounds[e], bounds[e+1]).
// Every GEMM phase is ONE launch for all experts: a tile is mapped to (expert, row tile,
// column tile) from the segment bounds read on the device (no host sync, no per-expert loop).
//   forward : [A|Bm] = X [W1|W3]  (fused SwiGLU / relu2 epilogue writes A, Bm, act)
//             Y = act W2
//   backward: dact = dY W2^T      (fused epilogue writes dA, dB; dact is never stored)
//             dW2 += act^T dY ; [dW1|dW3] += X^T [dA|dB]   (K = the segment's rows)
//             dX = dA W1^T + dB W3^T
// Shapes: X, Y, dX, dY [rows, d]; A, Bm, act, dA, dB [rows, h]; W1[e], W3[e] [d, h] at
// W1 + e*d*h; W2[e] [h, d]. Storage bf16; weight gradients fp32, ACCUMULATED (+=); pass
// null dW pointers to skip them (frozen views). d and h must be multiples of 8.
// rows_cap: a host-side upper bound of bounds[E] (N*k, or moe_permuted_capacity when the
// segments are tile-aligned); padding rows must hold zeros in X and dY.
// PX_EXPERT_GEMM=sm90 on a compute capability 9.0 device routes both functions to the
// wgmma/TMA kernels of expert_ffn_sm90.cuh (opt-in, not yet verified on a GPU); the default is
// the mma.sync path above.
#include "cuda_common.cuh"
#include "ops/cpu/cpu_ops.hpp"  // defines: px::cpu::ExpertAct

namespace px::cuda {

using px::cpu::ExpertAct;

void expert_ffn_forward(bf16* Y, bf16* A, bf16* Bm, bf16* act, const bf16* X, const bf16* W1,
                        const bf16* W3, const bf16* W2, const int32_t* bounds, int rows_cap,
                        int E, int d, int h, ExpertAct kind, cudaStream_t stream = 0);

void expert_ffn_backward(bf16* dX, float* dW1, float* dW3, float* dW2, const bf16* dY,
                         const bf16* X, const bf16* A, const bf16* Bm, const bf16* act,
                         const bf16* W1, const bf16* W3, const bf16* W2, const int32_t* bounds,
                         int rows_cap, int E, int d, int h, ExpertAct kind, bf16* dA_scratch,
                         bf16* dB_scratch, cudaStream_t stream = 0);

}  // namespace px::cuda
