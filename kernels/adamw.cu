// defines: adamw_update
#include "adamw.cuh"
#include "adamw_elem.cuh"  // defines: adamw_elem

#include <cmath>

namespace px::cuda {

namespace {

template <class G>
__global__ void adamw_kernel(float* p, const G* g, float* m, float* v, size_t n, float lr,
                             float b1, float b2, float eps, float wd, float c1, float c2,
                             bf16* pb) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float mi = m[i], vi = v[i];
    const float pi = adamw_elem(p[i], to_float(g[i]), mi, vi, lr, b1, b2, eps, wd, c1, c2);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    if (pb) pb[i] = __float2bfloat16(pi);
  }
}

}  // namespace

template <class G>
void adamw_update(float* p, const G* g, float* m, float* v, size_t n, float lr, float beta1,
                  float beta2, float eps, float wd, int step, bf16* p_bf16, cudaStream_t stream) {
  if (!n) return;
  float c1 = (float)(1.0 / (1.0 - std::pow((double)beta1, step)));
  float c2 = (float)(1.0 / (1.0 - std::pow((double)beta2, step)));
  size_t blocks = (n + 255) / 256;
  if (blocks > 8192) blocks = 8192;
  adamw_kernel<<<(unsigned)blocks, 256, 0, stream>>>(p, g, m, v, n, lr, beta1, beta2, eps, wd, c1,
                                                     c2, p_bf16);
  cudaCheckLaunch();
}

template void adamw_update<float>(float*, const float*, float*, float*, size_t, float, float,
                                  float, float, float, int, bf16*, cudaStream_t);
template void adamw_update<bf16>(float*, const bf16*, float*, float*, size_t, float, float, float,
                                 float, float, int, bf16*, cudaStream_t);

}  // namespace px::cuda
