#pragma once
// MoE router, same contract as px::cpu::router_forward/backward (fp32): probs = softmax(logits),
// top-k of probs + bias (bias may be null; ties -> lower index), gates = chosen probs
// renormalised. One warp per token row; E <= 1024, k <= 32.
#include "cuda_common.cuh"

namespace px::cuda {

void router_forward(float* probs, int32_t* idx, float* gates, const float* logits,
                    const float* bias, int N, int E, int k, cudaStream_t stream = 0);
// Per-expert statistics for the Switch aux loss (deterministic, no atomics):
// counts[e] = number of top-k assignments to e, prob_mean[e] = mean over rows of probs[:, e].
void router_stats(int32_t* counts, float* prob_mean, const float* probs, const int32_t* idx,
                  int N, int E, int k, cudaStream_t stream = 0);
void router_backward(float* dlogits, const float* dgates, const float* probs, const int32_t* idx,
                     const float* gates, const float* aux_coef, int N, int E, int k,
                     cudaStream_t stream = 0);

}  // namespace px::cuda
