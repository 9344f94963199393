#pragma once
// Hopper (sm_90a) path of the grouped routed-expert FFN: same functions, arguments and results
// as expert_ffn_forward / expert_ffn_backward (expert_ffn.cuh: shapes, layouts, rows_cap,
// bounds, null dW pointers), with its GEMM phases on wgmma.mma_async (bf16 in, fp32
// accumulate) fed by TMA (cp.async.bulk.tensor, 128-byte swizzle) through a 4-stage
// mbarrier pipeline: one producer warpgroup (one thread issues the TMA loads), two consumer
// warpgroups (64 rows each) of a 128-row tile.
// Every GEMM phase has a wgmma kernel:
//   forward : [A|Bm] = X [W1|W3] (fused SwiGLU / relu2 epilogue), Y = act W2;
//   backward: dact = dY W2^T (fused dA, dB epilogue), dW2 += act^T dY, [dW1|dW3] += X^T [dA|dB]
//             (K = the segment's rows), dX = dA W1^T + dB W3^T.
// PX_EXPERT_WGRAD=sm80 runs the weight gradients of expert_ffn_backward_sm90 on the mma.sync
// kernels of expert_ffn.cu instead (expert_ffn_wgrad_sm80), to isolate a wgrad problem.
// Extra requirements of this path: X, dY, act, dA, dB hold rows_cap rows (TMA reads whole
// 128-row boxes up to rows_cap; rows past a segment are read but never written), all pointers
// 16-byte aligned, compute capability exactly 9.0 (the kernels are compiled for sm_90a only).
// Selection: expert_ffn_forward / expert_ffn_backward run this path when PX_EXPERT_GEMM=sm90
// is set and the device is sm_90; the default is the mma.sync path.
// STATUS: written without a GPU; unverified until tests/cuda/test_expert_ffn_sm90.cpp passes
// on an H100.
#include "expert_ffn.cuh"  // defines: ExpertAct, the mma.sync path

namespace px::cuda {

// True when the current device is compute capability 9.0 (the sm_90a kernels can run).
bool expert_ffn_sm90_available();

void expert_ffn_forward_sm90(bf16* Y, bf16* A, bf16* Bm, bf16* act, const bf16* X,
                             const bf16* W1, const bf16* W3, const bf16* W2,
                             const int32_t* bounds, int rows_cap, int E, int d, int h,
                             ExpertAct kind, cudaStream_t stream = 0);

void expert_ffn_backward_sm90(bf16* dX, float* dW1, float* dW3, float* dW2, const bf16* dY,
                              const bf16* X, const bf16* A, const bf16* Bm, const bf16* act,
                              const bf16* W1, const bf16* W3, const bf16* W2,
                              const int32_t* bounds, int rows_cap, int E, int d, int h,
                              ExpertAct kind, bf16* dA_scratch, bf16* dB_scratch,
                              cudaStream_t stream = 0);

// The weight-gradient phases of expert_ffn_backward on wgmma (dW2 += act^T dY; dW1 (+ dW3) +=
// X^T dA (dB), K = the segment's rows); null pointers skip. rows_cap as above.
void expert_ffn_wgrad_sm90(float* dW1, float* dW3, float* dW2, const bf16* dY, const bf16* X,
                           const bf16* act, const bf16* dA, const bf16* dB,
                           const int32_t* bounds, int rows_cap, int E, int d, int h,
                           ExpertAct kind, cudaStream_t stream = 0);

// The weight-gradient phases of expert_ffn_backward on the mma.sync kernels (dW2 += act^T dY;
// dW1 (+ dW3) += X^T dA (dB)); null pointers skip. Used by both paths.
void expert_ffn_wgrad_sm80(float* dW1, float* dW3, float* dW2, const bf16* dY, const bf16* X,
                           const bf16* act, const bf16* dA, const bf16* dB,
                           const int32_t* bounds, int E, int d, int h, ExpertAct kind,
                           cudaStream_t stream = 0);

}  // namespace px::cuda
