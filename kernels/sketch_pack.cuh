#pragma once
// Sketch packing (DESIGN §7) on the GPU: for every expert segment [bounds[e], bounds[e+1]) of
// the permuted expert inputs X and output gradients dY (gate folded in), in one pass:
//   1. importance w_t = ||x_t|| * ||dy_t||;
//   2. if the segment has <= n rows, take all of them (weight 1); otherwise draw n rows i.i.d.
//      with probability q_t = w_t / sum w (deterministic given seed, step, expert), and
//      reweight dY by 1 / (n q_t) so that sum_s x_s dy_s^T is unbiased for X^T dY;
//   3. gather the rows, quantize int8 with one fp32 scale per row (absmax / 127, round to
//      nearest even), and checksum the expert's payload.
// The CPU side (the expert home) uses sketch_unpack_cpu / sketch_checksum_cpu below.
#include <cmath>
#include <cstdint>
#include <vector>

#include "cuda_common.cuh"

namespace px::cuda {

struct SketchBuffers {  // device arrays, expert-major, n slots per expert
  int E = 0, n = 0, d = 0, rows_cap = 0;
  int8_t* xq = nullptr;     // [E, n, d]
  int8_t* dyq = nullptr;    // [E, n, d]
  float* xs = nullptr;      // [E, n] scales
  float* dys = nullptr;     // [E, n]
  float* weight = nullptr;  // [E, n] dY reweighting factor 1/(n q) (1 when all taken)
  int32_t* row = nullptr;   // [E, n] permuted row taken
  int32_t* count = nullptr; // [E] rows in the sketch = min(n, segment rows)
  uint32_t* checksum = nullptr;  // [E]
  float* norms = nullptr;   // [rows_cap] scratch
  float* prefix = nullptr;  // [rows_cap] scratch
};

SketchBuffers sketch_alloc(int E, int n, int d, int rows_cap);
void sketch_free(SketchBuffers& sb);

// d must be a multiple of 8; rows_cap >= bounds[E].
void sketch_pack(SketchBuffers& sb, const bf16* X, const bf16* dY, const int32_t* bounds,
                 int rows_cap, int E, int d, int n, uint64_t seed, int step,
                 cudaStream_t stream = 0);

// The sampling stream of (seed, step, expert): u_s = uniform01(sketch_stream(...), s).
__host__ __device__ inline uint64_t sketch_stream(uint64_t seed, int step, int e) {
  return splitmix64(seed ^ splitmix64(((uint64_t)(uint32_t)step << 32) | (uint32_t)e));
}

// ---- host side (expert home / tests) ------------------------------------------------------
__host__ __device__ inline uint32_t sketch_mix32(uint32_t w, uint32_t i) {
  uint32_t x = w ^ (i * 0x9E3779B9u);
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Quantize one row as the kernel does (bit-identical): scale = absmax/127, q = rint(v/scale).
inline void sketch_quantize_row_cpu(const float* v, int d, int8_t* q, float* scale) {
  float amax = 0.f;
  for (int i = 0; i < d; ++i) amax = std::fmax(amax, std::fabs(v[i]));
  float s = amax / 127.f;
  *scale = s;
  for (int i = 0; i < d; ++i) {
    float r = s > 0.f ? std::rint(v[i] / s) : 0.f;
    q[i] = (int8_t)std::fmin(127.f, std::fmax(-127.f, r));
  }
}

// Checksum of expert e's payload: xq, dyq rows [0, count), their scales, weights, rows, count.
// Words are mixed with their index and summed mod 2^32 (order-free, so the GPU can reduce).
inline uint32_t sketch_checksum_cpu(const int8_t* xq, const int8_t* dyq, const float* xs,
                                    const float* dys, const float* weight, const int32_t* row,
                                    int count, int d) {
  uint32_t h = 0, i = 0;
  auto words = [&](const void* p, size_t bytes) {
    const uint32_t* w = static_cast<const uint32_t*>(p);
    for (size_t j = 0; j < bytes / 4; ++j) h += sketch_mix32(w[j], i++);
  };
  words(xq, (size_t)count * d);
  words(dyq, (size_t)count * d);
  words(xs, count * 4u);
  words(dys, count * 4u);
  words(weight, count * 4u);
  words(row, count * 4u);
  uint32_t c = (uint32_t)count;
  words(&c, 4);
  return h;
}

// Dequantize expert e's sketch (host copies of the [E, n, ...] arrays): X [count, d] and dY
// [count, d] = q * scale. Returns count.
inline int sketch_unpack_cpu(std::vector<float>& X, std::vector<float>& dY, const int8_t* xq,
                             const int8_t* dyq, const float* xs, const float* dys, int count,
                             int d) {
  X.resize((size_t)count * d);
  dY.resize((size_t)count * d);
  for (int r = 0; r < count; ++r)
    for (int i = 0; i < d; ++i) {
      X[(size_t)r * d + i] = (float)xq[(size_t)r * d + i] * xs[r];
      dY[(size_t)r * d + i] = (float)dyq[(size_t)r * d + i] * dys[r];
    }
  return count;
}

}  // namespace px::cuda
