#pragma once
// Causal multi-head attention, flash-style (fp32 first version): the T x T probabilities are
// never stored; the forward saves lse[B, H, T] (log-sum-exp of the scaled scores) instead of
// px::cpu's probs, and the backward recomputes P from q, k and lse. Same math as
// px::cpu::attention_forward/backward: q, k, v, out, dq, dk, dv are [B*T, H*hd], scale
// 1/sqrt(hd). head_dim hd in {32, 64, 128} forward, {32, 64} backward. dq, dk, dv assigned.
#include "cuda_common.cuh"

namespace px::cuda {

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int B, int Tn, int H, int hd, cudaStream_t stream = 0);
// scratch: B*H*T floats (the row sums D_i = <dout_i, out_i>).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* q, const float* k, const float* v, const float* lse, int B,
                        int Tn, int H, int hd, float* scratch, cudaStream_t stream = 0);

}  // namespace px::cuda
