#pragma once
// RoPE, rotate-half, same contract as px::cpu::rope_forward/backward: [B*T, H*hd], position t,
// pair i (< hd/2) rotates (x[i], x[i+hd/2]) by t * 10000^(-2i/hd). In place allowed.
#include "cuda_common.cuh"

namespace px::cuda {

template <class T>
void rope_forward(T* out, const T* in, int B, int Tn, int H, int hd, cudaStream_t stream = 0);
template <class T>
void rope_backward(T* din, const T* dout, int B, int Tn, int H, int hd, cudaStream_t stream = 0);

}  // namespace px::cuda
