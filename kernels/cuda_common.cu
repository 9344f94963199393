// defines: convert_f32_to_bf16, convert_bf16_to_f32
#include "cuda_common.cuh"

namespace px::cuda {

__global__ void f32_to_bf16_kernel(bf16* out, const float* in, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}
__global__ void bf16_to_f32_kernel(float* out, const bf16* in, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

static int grid_for(size_t n) {
  size_t g = (n + 255) / 256;
  return (int)(g < 65535 * 8 ? (g ? g : 1) : 65535 * 8);
}

void convert_f32_to_bf16(bf16* out, const float* in, size_t n, cudaStream_t stream) {
  if (!n) return;
  f32_to_bf16_kernel<<<grid_for(n), 256, 0, stream>>>(out, in, n);
  cudaCheckLaunch();
}
void convert_bf16_to_f32(float* out, const bf16* in, size_t n, cudaStream_t stream) {
  if (!n) return;
  bf16_to_f32_kernel<<<grid_for(n), 256, 0, stream>>>(out, in, n);
  cudaCheckLaunch();
}

}  // namespace px::cuda
