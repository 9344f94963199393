#pragma once
// Sketch packing (DESIGN §7) on the GPU: for every expert segment [bounds[e], bounds[e+1]) of
// the permuted expert inputs X and output gradients dY (gate folded in), in one pass:
//   1. importance w_t = ||x_t|| * ||dy_t||;
//   2. if the segment has <= n rows, take all of them (weight 1); otherwise draw n rows i.i.d.
//      with probability q_t = w_t / sum w (deterministic given seed, step, expert), and
//      reweight dY by 1 / (n q_t) so that sum_s x_s dy_s^T is unbiased for X^T dY;
//   3. gather the rows, code each row with its own scale (int8 / fp8 e4m3 / bf16, the rules
//      of src/sketch/sketch_quant.hpp, shared with the CPU), and checksum the expert's payload.
// The CPU side (an expert home) wraps expert e's slice with sketch_wrap and reads it with
// sketch_verify / sketch_unpack (src/wire/sketch_wire.hpp); sketch_checksum_cpu is the
// host twin of the device checksum below.
#include <cmath>
#include <cstdint>
#include <vector>

#include "cuda_common.cuh"
#include "sketch/sketch_quant.hpp"  // defines: SketchElem, sketch_stream, row coding

namespace px::cuda {

using px::SketchElem;
using px::sketch_stream;

struct SketchBuffers {  // device arrays, expert-major, n slots per expert
  int E = 0, n = 0, d = 0, rows_cap = 0;
  SketchElem dtype = px::SKETCH_INT8;
  uint8_t* xq = nullptr;    // [E, n, d] codes of sketch_elem_bytes(dtype) bytes each
  uint8_t* dyq = nullptr;   // [E, n, d]
  float* xs = nullptr;      // [E, n] scales
  float* dys = nullptr;     // [E, n]
  float* weight = nullptr;  // [E, n] dY reweighting factor 1/(n q) (1 when all taken)
  int32_t* row = nullptr;   // [E, n] permuted row taken
  int32_t* count = nullptr; // [E] rows in the sketch = min(n, segment rows)
  uint32_t* checksum = nullptr;  // [E]
  float* norms = nullptr;   // [rows_cap] scratch
  float* prefix = nullptr;  // [rows_cap] scratch
};

SketchBuffers sketch_alloc(int E, int n, int d, int rows_cap,
                           SketchElem dtype = px::SKETCH_INT8);
void sketch_free(SketchBuffers& sb);

// d must be a multiple of 8; rows_cap >= bounds[E].
void sketch_pack(SketchBuffers& sb, const bf16* X, const bf16* dY, const int32_t* bounds,
                 int rows_cap, int E, int d, int n, uint64_t seed, int step,
                 cudaStream_t stream = 0);

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

// Checksum of expert e's payload: xq, dyq rows [0, count), their scales, weights, rows, count.
// Words are mixed with their index and summed mod 2^32 (order-free, so the GPU can reduce).
// elem_bytes = sketch_elem_bytes(dtype).
inline uint32_t sketch_checksum_cpu(const uint8_t* xq, const uint8_t* dyq, const float* xs,
                                    const float* dys, const float* weight, const int32_t* row,
                                    int count, int d, int elem_bytes) {
  uint32_t h = 0, i = 0;
  auto words = [&](const void* p, size_t bytes) {
    const uint32_t* w = static_cast<const uint32_t*>(p);
    for (size_t j = 0; j < bytes / 4; ++j) h += sketch_mix32(w[j], i++);
  };
  words(xq, (size_t)count * d * elem_bytes);
  words(dyq, (size_t)count * d * elem_bytes);
  words(xs, count * 4u);
  words(dys, count * 4u);
  words(weight, count * 4u);
  words(row, count * 4u);
  uint32_t c = (uint32_t)count;
  words(&c, 4);
  return h;
}

}  // namespace px::cuda
