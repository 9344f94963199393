#pragma once
// RoPE, rotate-half, same contract as px::cpu::rope_forward/backward: [B*T, H*hd], position t,
// pair i (< hd/2) rotates (x[i], x[i+hd/2]) by t * 10000^(-2i/hd). In place allowed.
// fp32 angle math: frequencies from double on the host (hi + lo fp32 split), compensated
// fp32 product t * f, sincosf; (cos, sin) computed once per (token, pair) in shared memory
// and shared by all heads; 16-byte loads/stores (hd/2 a multiple of 8,
// 16-byte aligned pointers; otherwise a scalar fallback). hd <= 256.
#include "cuda_common.cuh"

namespace px::cuda {

template <class T>
void rope_forward(T* out, const T* in, int B, int Tn, int H, int hd, cudaStream_t stream = 0);
template <class T>
void rope_backward(T* din, const T* dout, int B, int Tn, int H, int hd, cudaStream_t stream = 0);
// In place on two tensors of the same shape in one launch (q and k; dq and dk).
template <class T>
void rope_forward2(T* a, T* b, int B, int Tn, int H, int hd, cudaStream_t stream = 0);
template <class T>
void rope_backward2(T* a, T* b, int B, int Tn, int H, int hd, cudaStream_t stream = 0);

}  // namespace px::cuda
