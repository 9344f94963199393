// defines: sketch_alloc, sketch_free, sketch_pack
#include "sketch_pack.cuh"

namespace px::cuda {

namespace {

// One warp per row: w = ||x|| * ||dy|| with 16-byte loads.
__global__ void sketch_norms_kernel(float* w, const bf16* X, const bf16* dY,
                                    const int32_t* bounds, int E, int rows_cap, int d) {
  int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (r >= rows_cap || r >= bounds[E]) return;
  const uint4* xr = reinterpret_cast<const uint4*>(X + (size_t)r * d);
  const uint4* gr = reinterpret_cast<const uint4*>(dY + (size_t)r * d);
  float sx = 0.f, sg = 0.f;
  for (int c = lane; c < d / 8; c += 32) {
    uint4 a = xr[c], b = gr[c];
    const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&a);
    const __nv_bfloat162* pb = reinterpret_cast<const __nv_bfloat162*>(&b);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float2 fa = __bfloat1622float2(pa[j]), fb = __bfloat1622float2(pb[j]);
      sx += fa.x * fa.x + fa.y * fa.y;
      sg += fb.x * fb.x + fb.y * fb.y;
    }
  }
  sx = warp_sum(sx);
  sg = warp_sum(sg);
  if (lane == 0) w[r] = sqrtf(sx) * sqrtf(sg);
}

// One block (1024 threads) per expert: inclusive prefix of w over the segment (only needed
// when the segment has more than n rows). Each thread scans a contiguous chunk.
__global__ void sketch_prefix_kernel(float* prefix, const float* w, const int32_t* bounds, int n) {
  __shared__ float part[1024 + 64];
  int e = blockIdx.x, b0 = bounds[e], cnt = bounds[e + 1] - b0;
  if (cnt <= n) return;
  int per = (cnt + blockDim.x - 1) / blockDim.x;
  int lo = min(cnt, threadIdx.x * per), hi = min(cnt, lo + per);
  float s = 0.f;
  for (int i = lo; i < hi; ++i) s += w[b0 + i];
  // exclusive block scan of the per-thread sums: warp shuffles, then the warp totals.
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  float incl = s;
  for (int o = 1; o < 32; o <<= 1) {
    float t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (lane == 31) part[wid] = incl;
  __syncthreads();
  if (wid == 0) {
    float wt = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.f, wi = wt;
    for (int o = 1; o < 32; o <<= 1) {
      float t = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += t;
    }
    part[32 + lane] = wi - wt;  // exclusive prefix of warp totals
  }
  __syncthreads();
  part[threadIdx.x + 64] = part[32 + wid] + incl - s;
  s = part[threadIdx.x + 64];
  for (int i = lo; i < hi; ++i) {
    s += w[b0 + i];
    prefix[b0 + i] = s;
  }
}

// Code v (this thread's elements, VPT per thread) into the row's codes q with a block absmax
// (sketch_quant.hpp: the same rule as the CPU).
template <int VPT>
__device__ inline float quantize_store(const float (&v)[VPT], uint8_t* q, int d, SketchElem t) {
  float m = 0.f;
#pragma unroll
  for (int j = 0; j < VPT; ++j) m = fmaxf(m, fabsf(v[j]));
  m = block_max(m);
  float s = px::sketch_row_scale(m, t);
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    int i = threadIdx.x + j * blockDim.x;
    if (i < d) px::sketch_encode_elem(v[j], s, t, q, i);
  }
  return s;
}

// Grid (n, E): sample s of expert e. Block 128 threads, VPT = ceil(d / 128) <= 32.
template <int VPT>
__global__ void sketch_gather_kernel(SketchBuffers sb, const bf16* X, const bf16* dY,
                                     const int32_t* bounds, int d, int n, uint64_t seed, int step) {
  int s = blockIdx.x, e = blockIdx.y;
  int b0 = bounds[e], cnt = bounds[e + 1] - b0;
  int take = min(cnt, n);
  if (threadIdx.x == 0 && s == 0) sb.count[e] = take;
  if (s >= take) return;
  int r;
  float weight;
  if (cnt <= n) {
    r = b0 + s;
    weight = 1.f;
  } else {
    float total = sb.prefix[b0 + cnt - 1];
    double u = uniform01(sketch_stream(seed, step, e), (uint64_t)s);
    if (total > 0.f) {
      float target = (float)(u * total);
      int lo = 0, hi = cnt - 1;  // first i with prefix[i] >= target
      while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (sb.prefix[b0 + mid] >= target) hi = mid; else lo = mid + 1;
      }
      r = b0 + lo;
      float q = sb.norms[r] / total;
      weight = 1.f / ((float)n * q);
    } else {  // all-zero segment: uniform sampling
      r = b0 + min(cnt - 1, (int)(u * cnt));
      weight = (float)cnt / (float)n;
    }
  }
  size_t slot = (size_t)e * sb.n + s;
  const size_t row_bytes = (size_t)d * px::sketch_elem_bytes(sb.dtype);
  float v[VPT];
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    int i = threadIdx.x + j * blockDim.x;
    v[j] = i < d ? __bfloat162float(X[(size_t)r * d + i]) : 0.f;
  }
  float xs = quantize_store<VPT>(v, sb.xq + slot * row_bytes, d, sb.dtype);
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    int i = threadIdx.x + j * blockDim.x;
    v[j] = i < d ? __bfloat162float(dY[(size_t)r * d + i]) * weight : 0.f;
  }
  float gs = quantize_store<VPT>(v, sb.dyq + slot * row_bytes, d, sb.dtype);
  if (threadIdx.x == 0) {
    sb.xs[slot] = xs;
    sb.dys[slot] = gs;
    sb.weight[slot] = weight;
    sb.row[slot] = r;
  }
}

// Grid (E, kCsSplit): the order-free checksum of sketch_checksum_cpu. Each block hashes a
// strided share of the expert's words and adds it with an integer atomicAdd (wrap-around
// addition is associative and commutative, so the result does not depend on the order).
constexpr int kCsSplit = 32;
__global__ void sketch_checksum_kernel(SketchBuffers sb, int d, int n) {
  int e = blockIdx.x, count = sb.count[e];
  size_t slot = (size_t)e * sb.n;
  const int eb = px::sketch_elem_bytes(sb.dtype);
  uint32_t words_row = (uint32_t)count * d * eb / 4;
  uint32_t h = 0;
  const uint32_t start = blockIdx.y * blockDim.x + threadIdx.x, stride = gridDim.y * blockDim.x;
  auto mix_range = [&](const void* p, uint32_t nw, uint32_t base) {
    const uint32_t* w = static_cast<const uint32_t*>(p);
    for (uint32_t j = start; j < nw; j += stride) h += sketch_mix32(w[j], base + j);
  };
  uint32_t base = 0;
  mix_range(sb.xq + slot * d * eb, words_row, base); base += words_row;
  mix_range(sb.dyq + slot * d * eb, words_row, base); base += words_row;
  mix_range(sb.xs + slot, count, base); base += count;
  mix_range(sb.dys + slot, count, base); base += count;
  mix_range(sb.weight + slot, count, base); base += count;
  mix_range(sb.row + slot, count, base); base += count;
  if (start == 0) h += sketch_mix32((uint32_t)count, base);
  __shared__ uint32_t red[32];
  for (int o = 16; o > 0; o >>= 1) h += __shfl_xor_sync(0xffffffffu, h, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = h;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t t = 0;
    for (int w = 0; w < (int)blockDim.x / 32; ++w) t += red[w];
    atomicAdd(&sb.checksum[e], t);
  }
}

}  // namespace

SketchBuffers sketch_alloc(int E, int n, int d, int rows_cap, SketchElem dtype) {
  SketchBuffers sb;
  sb.E = E; sb.n = n; sb.d = d; sb.rows_cap = rows_cap; sb.dtype = dtype;
  size_t slots = (size_t)E * n, code_bytes = slots * d * px::sketch_elem_bytes(dtype);
  cudaCheck(cudaMalloc(&sb.xq, code_bytes));
  cudaCheck(cudaMalloc(&sb.dyq, code_bytes));
  cudaCheck(cudaMalloc(&sb.xs, slots * 4));
  cudaCheck(cudaMalloc(&sb.dys, slots * 4));
  cudaCheck(cudaMalloc(&sb.weight, slots * 4));
  cudaCheck(cudaMalloc(&sb.row, slots * 4));
  cudaCheck(cudaMalloc(&sb.count, E * 4));
  cudaCheck(cudaMalloc(&sb.checksum, E * 4));
  cudaCheck(cudaMalloc(&sb.norms, (size_t)rows_cap * 4 + 4));
  cudaCheck(cudaMalloc(&sb.prefix, (size_t)rows_cap * 4 + 4));
  return sb;
}

void sketch_free(SketchBuffers& sb) {
  for (void* p : {(void*)sb.xq, (void*)sb.dyq, (void*)sb.xs, (void*)sb.dys, (void*)sb.weight,
                  (void*)sb.row, (void*)sb.count, (void*)sb.checksum, (void*)sb.norms,
                  (void*)sb.prefix})
    if (p) cudaCheck(cudaFree(p));
  sb = SketchBuffers{};
}

void sketch_pack(SketchBuffers& sb, const bf16* X, const bf16* dY, const int32_t* bounds,
                 int rows_cap, int E, int d, int n, uint64_t seed, int step, cudaStream_t stream) {
  if (E <= 0 || n <= 0) return;
  if (d % 8 || d > 32 * 128 || n > sb.n || E > sb.E || d != sb.d || rows_cap > sb.rows_cap)
    cuda_fail("sketch_pack", "bad shape (d % 8, d <= 4096, n/E/d/rows_cap within buffers)",
              __FILE__, __LINE__);
  if (rows_cap > 0) {
    sketch_norms_kernel<<<ceil_div(rows_cap, 8), 256, 0, stream>>>(sb.norms, X, dY, bounds, E,
                                                                   rows_cap, d);
    cudaCheckLaunch();
    sketch_prefix_kernel<<<E, 1024, 0, stream>>>(sb.prefix, sb.norms, bounds, n);
    cudaCheckLaunch();
  }
  dim3 grid(n, E);
  int vpt = ceil_div(d, 128);
#define PX_SKETCH_CASE(V)                                                                   \
  if (vpt <= V) {                                                                           \
    sketch_gather_kernel<V><<<grid, 128, 0, stream>>>(sb, X, dY, bounds, d, n, seed, step); \
  } else
  PX_SKETCH_CASE(2) PX_SKETCH_CASE(4) PX_SKETCH_CASE(8) PX_SKETCH_CASE(16) PX_SKETCH_CASE(32) {}
#undef PX_SKETCH_CASE
  cudaCheckLaunch();
  cudaCheck(cudaMemsetAsync(sb.checksum, 0, E * sizeof(uint32_t), stream));
  sketch_checksum_kernel<<<dim3(E, kCsSplit), 256, 0, stream>>>(sb, d, n);
  cudaCheckLaunch();
}

}  // namespace px::cuda
