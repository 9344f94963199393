// defines: embedding_forward, embedding_backward
#include "embedding.cuh"

namespace px::cuda {

namespace {

__global__ void embed_fwd_kernel(float* x, const float* table, const int32_t* tokens, int d) {
  const float* src = table + (size_t)tokens[blockIdx.x] * d;
  float* dst = x + (size_t)blockIdx.x * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = src[i];
}

__global__ void embed_bwd_kernel(float* dtable, const float* dx, const int32_t* tokens, int d) {
  float* dst = dtable + (size_t)tokens[blockIdx.x] * d;
  const float* src = dx + (size_t)blockIdx.x * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) atomicAdd(dst + i, src[i]);
}

int threads_for(int d) { return d >= 256 ? 256 : 128; }

}  // namespace

void embedding_forward(float* x, const float* table, const int32_t* tokens, int N, int d,
                       cudaStream_t stream) {
  if (N <= 0) return;
  embed_fwd_kernel<<<N, threads_for(d), 0, stream>>>(x, table, tokens, d);
  cudaCheckLaunch();
}

void embedding_backward(float* dtable, const float* dx, const int32_t* tokens, int N, int d,
                        cudaStream_t stream) {
  if (N <= 0) return;
  embed_bwd_kernel<<<N, threads_for(d), 0, stream>>>(dtable, dx, tokens, d);
  cudaCheckLaunch();
}

}  // namespace px::cuda
