// defines: ternary_pack, ternary_unpack, ternary_matmul
#include "ternary.cuh"

namespace px::cuda {

namespace {

__global__ void ternary_scale_kernel(float* scale, const float* W, int in, int out) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= out) return;
  float s = 0.f;
  for (int i = 0; i < in; ++i) s += fabsf(W[(size_t)i * out + j]);
  scale[j] = s / in;
}

__global__ void ternary_pack_kernel(uint32_t* packed, const float* scale, const float* W, int in,
                                    int out) {
  int words = in / 16;
  int j = blockIdx.x * blockDim.x + threadIdx.x;  // output unit fastest: coalesced W reads
  int k = blockIdx.y;
  if (j >= out) return;
  float s = scale[j];
  uint32_t w = 0;
  for (int t = 0; t < 16; ++t) {
    float v = W[(size_t)(k * 16 + t) * out + j];
    float r = s > 0.f ? fminf(1.f, fmaxf(-1.f, rintf(v / s))) : 0.f;
    uint32_t c = r > 0.f ? 1u : (r < 0.f ? 2u : 0u);
    w |= c << (2 * t);
  }
  packed[(size_t)j * words + k] = w;
}

template <class T>
__global__ void ternary_unpack_kernel(T* W, const uint32_t* packed, const float* scale, int in,
                                      int out) {
  size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (e >= (size_t)in * out) return;
  int i = (int)(e / out), j = (int)(e % out);
  uint32_t w = packed[(size_t)j * (in / 16) + i / 16];
  W[e] = from_float<T>((float)ternary_decode(w, i % 16) * scale[j]);
}

// Block: 64 output units x 16 rows; X tile [16 rows x 64 in] and codes in shared memory.
constexpr int TJ = 64, TM = 16, TK = 64;
__global__ void ternary_matmul_kernel(float* Y, const bf16* X, const uint32_t* packed,
                                      const float* scale, int M, int in, int out, bool acc) {
  __shared__ float xs[TM][TK + 1];
  __shared__ uint32_t ws[TJ][TK / 16 + 1];
  int tj = threadIdx.x % TJ, tm = threadIdx.x / TJ;  // 256 threads: 64 x 4
  int j = blockIdx.x * TJ + tj, m0 = blockIdx.y * TM;
  float sum[TM / 4] = {0.f, 0.f, 0.f, 0.f};
  int words = in / 16;
  for (int k0 = 0; k0 < in; k0 += TK) {
    for (int c = threadIdx.x; c < TM * TK; c += blockDim.x) {
      int r = c / TK, kk = c % TK;
      xs[r][kk] = (m0 + r < M && k0 + kk < in) ? __bfloat162float(X[(size_t)(m0 + r) * in + k0 + kk]) : 0.f;
    }
    for (int c = threadIdx.x; c < TJ * (TK / 16); c += blockDim.x) {
      int jj = c / (TK / 16), w = c % (TK / 16);
      int gj = blockIdx.x * TJ + jj, gw = k0 / 16 + w;
      ws[jj][w] = (gj < out && gw < words) ? packed[(size_t)gj * words + gw] : 0u;
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < TK / 16; ++w) {
      uint32_t word = ws[tj][w];
#pragma unroll
      for (int t = 0; t < 16; ++t) {
        int c = ternary_decode(word, t);
        if (c == 0) continue;
        float sg = (float)c;
#pragma unroll
        for (int r = 0; r < TM / 4; ++r) sum[r] += sg * xs[tm * (TM / 4) + r][w * 16 + t];
      }
    }
    __syncthreads();
  }
  if (j >= out) return;
  float s = scale[j];
#pragma unroll
  for (int r = 0; r < TM / 4; ++r) {
    int m = m0 + tm * (TM / 4) + r;
    if (m < M) {
      size_t o = (size_t)m * out + j;
      Y[o] = (acc ? Y[o] : 0.f) + sum[r] * s;
    }
  }
}

}  // namespace

void ternary_pack(uint32_t* packed, float* scale, const float* W, int in, int out,
                  cudaStream_t stream) {
  if (in % 16) cuda_fail("ternary_pack", "in must be a multiple of 16", __FILE__, __LINE__);
  if (in <= 0 || out <= 0) return;
  ternary_scale_kernel<<<ceil_div(out, 128), 128, 0, stream>>>(scale, W, in, out);
  cudaCheckLaunch();
  ternary_pack_kernel<<<dim3(ceil_div(out, 128), in / 16), 128, 0, stream>>>(packed, scale, W, in, out);
  cudaCheckLaunch();
}

template <class T>
void ternary_unpack(T* W, const uint32_t* packed, const float* scale, int in, int out,
                    cudaStream_t stream) {
  size_t n = (size_t)in * out;
  if (!n) return;
  ternary_unpack_kernel<T><<<(unsigned)((n + 255) / 256), 256, 0, stream>>>(W, packed, scale, in, out);
  cudaCheckLaunch();
}

void ternary_matmul(float* Y, const bf16* X, const uint32_t* packed, const float* scale, int M,
                    int in, int out, bool accumulate, cudaStream_t stream) {
  if (M <= 0 || out <= 0) return;
  if (in % 16) cuda_fail("ternary_matmul", "in must be a multiple of 16", __FILE__, __LINE__);
  ternary_matmul_kernel<<<dim3(ceil_div(out, TJ), ceil_div(M, TM)), 256, 0, stream>>>(
      Y, X, packed, scale, M, in, out, accumulate);
  cudaCheckLaunch();
}

template void ternary_unpack<float>(float*, const uint32_t*, const float*, int, int, cudaStream_t);
template void ternary_unpack<bf16>(bf16*, const uint32_t*, const float*, int, int, cudaStream_t);

}  // namespace px::cuda
