#pragma once
// Causal flash attention on tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate, fp32
// online softmax). Same math as px::cpu::attention_forward/backward: q, k, v, out, dout, dq,
// dk, dv are [B*T, H*hd] (row stride H*hd), scale 1/sqrt(hd), causal. The forward saves
// lse[B, H, T] (natural-log log-sum-exp of the scaled scores) instead of the T x T probs; the
// backward (FlashAttention-2 style) recomputes P from q, k and lse. head_dim hd in {32, 64,
// 128}; row stride H*hd and the pointers must allow 16-byte loads (hd multiple of 8, 16-byte
// aligned buffers). No atomics: the backward runs one pass over key tiles (dK, dV) and one
// over query tiles (dQ), so the results are deterministic.
#include "cuda_common.cuh"

namespace px::cuda {

// out: bf16 [B*T, H*hd]; lse: fp32 [B, H, T].
void attention_forward_bf16(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                            int B, int Tn, int H, int hd, cudaStream_t stream = 0);

// dq, dk, dv assigned (G = float or bf16). out is the forward's bf16 output (for the row sums
// D_i = <dout_i, out_i>); scratch: B*H*T floats (D).
template <class G>
void attention_backward_bf16(G* dq, G* dk, G* dv, const bf16* dout, const bf16* out,
                             const bf16* q, const bf16* k, const bf16* v, const float* lse, int B,
                             int Tn, int H, int hd, float* scratch, cudaStream_t stream = 0);

}  // namespace px::cuda
