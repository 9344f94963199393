#pragma once
// Cross-entropy over logits [N, V] (fp32) with int32 targets, same contract as
// px::cpu::cross_entropy: losses[n] = logsumexp(logits[n]) - logits[n, target];
// dlogits = (softmax - onehot) * dscale when dlogits != null (may alias logits).
#include "cuda_common.cuh"

namespace px::cuda {

void cross_entropy(float* dlogits, float* losses, const float* logits, const int32_t* targets,
                   int N, int V, float dscale, cudaStream_t stream = 0);
// Convenience: runs cross_entropy and returns the mean loss (synchronises the stream).
// losses_scratch: N floats.
double cross_entropy_mean(float* dlogits, float* losses_scratch, const float* logits,
                          const int32_t* targets, int N, int V, float dscale,
                          cudaStream_t stream = 0);

}  // namespace px::cuda
