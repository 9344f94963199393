// defines: cross_entropy, cross_entropy_mean
#include "cross_entropy.cuh"

#include <vector>

namespace px::cuda {

namespace {

// One block per row: online max/sum in one pass, then the gradient pass.
__global__ void ce_kernel(float* dlogits, float* losses, const float* logits,
                          const int32_t* targets, int V, float dscale) {
  const float* l = logits + (size_t)blockIdx.x * V;
  float m = -INFINITY, s = 0.f;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    float x = l[v];
    if (x > m) {
      s = s * expf(m - x) + 1.f;
      m = x;
    } else {
      s += expf(x - m);
    }
  }
  float M = block_max(m);
  float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M));
  float lse = M + logf(S);
  int t = targets[blockIdx.x];
  float lt = l[t];
  __syncthreads();  // everyone has read l[t] before dlogits (maybe aliasing) is written
  if (threadIdx.x == 0) losses[blockIdx.x] = lse - lt;
  if (dlogits) {
    float* dl = dlogits + (size_t)blockIdx.x * V;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
      float g = expf(l[v] - lse) * dscale;
      dl[v] = v == t ? g - dscale : g;
    }
  }
}

}  // namespace

void cross_entropy(float* dlogits, float* losses, const float* logits, const int32_t* targets,
                   int N, int V, float dscale, cudaStream_t stream) {
  if (N <= 0) return;
  ce_kernel<<<N, V >= 4096 ? 512 : 256, 0, stream>>>(dlogits, losses, logits, targets, V, dscale);
  cudaCheckLaunch();
}

double cross_entropy_mean(float* dlogits, float* losses_scratch, const float* logits,
                          const int32_t* targets, int N, int V, float dscale,
                          cudaStream_t stream) {
  if (N <= 0) return 0.0;
  cross_entropy(dlogits, losses_scratch, logits, targets, N, V, dscale, stream);
  std::vector<float> h(N);
  cudaCheck(cudaMemcpyAsync(h.data(), losses_scratch, N * sizeof(float), cudaMemcpyDeviceToHost,
                            stream));
  cudaCheck(cudaStreamSynchronize(stream));
  double s = 0;
  for (float x : h) s += x;
  return s / N;
}

}  // namespace px::cuda
