#pragma once
// Shared helpers of the CUDA backend: error checks that name the failing call, bf16
// conversion helpers, a device-side random generator and small launch utilities.
// Every launcher in kernels/ is a host function px::cuda::<op>(...) taking device pointers
// and an optional stream; it checks the launch with cudaCheck(cudaGetLastError()).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "util/hash_rng.hpp"  // defines: splitmix64, uniform01

namespace px::cuda {

using bf16 = __nv_bfloat16;

[[noreturn]] inline void cuda_fail(const char* what, const char* err, const char* file, int line) {
  std::fprintf(stderr, "[CUDA ERROR] %s failed: %s at %s:%d\n", what, err, file, line);
  std::abort();
}

}  // namespace px::cuda

// cudaCheck(cudaMalloc(...)): aborts with the call's text and the error string.
#define cudaCheck(call)                                                                  \
  do {                                                                                   \
    cudaError_t px_err_ = (call);                                                        \
    if (px_err_ != cudaSuccess)                                                          \
      ::px::cuda::cuda_fail(#call, cudaGetErrorString(px_err_), __FILE__, __LINE__);     \
  } while (0)

#define cublasCheck(call)                                                                \
  do {                                                                                   \
    cublasStatus_t px_st_ = (call);                                                      \
    if (px_st_ != CUBLAS_STATUS_SUCCESS) {                                               \
      char px_buf_[64];                                                                  \
      std::snprintf(px_buf_, sizeof px_buf_, "cublas status %d", (int)px_st_);           \
      ::px::cuda::cuda_fail(#call, px_buf_, __FILE__, __LINE__);                         \
    }                                                                                    \
  } while (0)

// After every kernel launch.
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())

namespace px::cuda {

inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

// True when at least one CUDA device is usable (tests skip otherwise).
// The current device's name (cudaDeviceProp::name, e.g. "NVIDIA H100 80GB HBM3").
inline std::string device_name() {
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return prop.name;
}

// The number of visible CUDA devices (0 without a driver or device).
inline int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// Makes device dev current for this host thread (before any allocation).
inline void set_device(int dev) { cudaCheck(cudaSetDevice(dev)); }

inline bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

__host__ __device__ inline float to_float(float x) { return x; }
__host__ __device__ inline float to_float(bf16 x) { return __bfloat162float(x); }
template <class T>
__host__ __device__ inline T from_float(float x);
template <>
__host__ __device__ inline float from_float<float>(float x) { return x; }
template <>
__host__ __device__ inline bf16 from_float<bf16>(float x) { return __float2bfloat16(x); }

// Conversions of whole buffers (device pointers), n elements.
void convert_f32_to_bf16(bf16* out, const float* in, size_t n, cudaStream_t stream = 0);
void convert_bf16_to_f32(float* out, const bf16* in, size_t n, cudaStream_t stream = 0);

// The counter-based RNG (splitmix64, uniform01) is shared with the CPU backend.
using px::splitmix64;
using px::uniform01;

#ifdef __CUDACC__
__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Block-wide sum, blockDim.x a multiple of 32 (<= 1024). All threads get the result.
__device__ inline float block_sum(float v) {
  __shared__ float sh[32];
  v = warp_sum(v);
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  float r = lane < nw ? sh[lane] : 0.f;
  return warp_sum(r);
}
__device__ inline float block_max(float v) {
  __shared__ float shm[32];
  v = warp_max(v);
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shm[w] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  float r = lane < nw ? shm[lane] : -INFINITY;
  return warp_max(r);
}
#endif  // __CUDACC__

}  // namespace px::cuda
