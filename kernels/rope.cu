// defines: rope_forward, rope_backward, rope_forward2, rope_backward2
#include "rope.cuh"

#include "elementwise.cuh"  // defines: load8, store8, aligned16

#include <algorithm>
#include <cmath>

namespace px::cuda {

namespace {

constexpr int kMaxHalf = 128;  // hd <= 256

// Frequencies 10000^(-2i/hd) computed in double on the host, split into fp32 hi + lo so the
// angle t * f is formed in fp32 with a compensated product (error ~1e-7 rad at t = 4096,
// where a plain fp32 product of a rounded f is off by up to ~5e-4).
struct Freqs {
  float hi[kMaxHalf], lo[kMaxHalf];
};

Freqs make_freqs(int hd) {
  Freqs f{};
  for (int i = 0; i < hd / 2 && i < kMaxHalf; ++i) {
    double v = std::pow(10000.0, -2.0 * i / hd);
    f.hi[i] = (float)v;
    f.lo[i] = (float)(v - (double)f.hi[i]);
  }
  return f;
}

// cos and sign*sin of t * f_i in fp32: p = fl(t * hi) (t exact), c = exact rounding error of
// that product + t * lo; sin(p + c) ~ sin p + c cos p (|c| < 1e-3, c^2 below fp32 rounding).
__device__ __forceinline__ float2 rope_cs(int t, int i, const Freqs& f, float sign) {
  const float tf = (float)t, hi = f.hi[i];
  const float p = tf * hi;
  const float c = fmaf(tf, hi, -p) + tf * f.lo[i];
  float s, co;
  sincosf(p, &s, &co);
  return make_float2(co - c * s, sign * (s + c * co));
}

// Vectorised: a block handles R token rows (all H heads); the R x hd/2 (cos, sin) pairs are
// computed once into shared memory, then every thread rotates VEC consecutive pairs of one
// head with 16-byte loads/stores of both halves. blockIdx.y picks the tensor (q or k).
template <class T>
__global__ void rope_vec_kernel(T* out0, const T* in0, T* out1, const T* in1, int rows, int Tn,
                                int H, int hd, int R, float sign, Freqs f) {
  constexpr int V = 8;
  extern __shared__ float2 cs[];  // [R][half]
  T* out = blockIdx.y ? out1 : out0;
  const T* in = blockIdx.y ? in1 : in0;
  const int half = hd / 2, row0 = blockIdx.x * R;
  const int nr = min(R, rows - row0);
  for (int j = threadIdx.x; j < nr * half; j += blockDim.x) {
    const int r = j / half, i = j - r * half;
    cs[j] = rope_cs((row0 + r) % Tn, i, f, sign);
  }
  __syncthreads();
  const int cpr = half / V, items = H * cpr;  // chunks per head, per row
  for (int w = threadIdx.x; w < nr * items; w += blockDim.x) {
    const int r = w / items, it = w - r * items;
    const int hh = it / cpr, c = it - hh * cpr;
    const size_t base = ((size_t)(row0 + r) * H + hh) * hd + (size_t)c * V;
    float a[V], b[V];
    load8(in + base, a);
    load8(in + base + half, b);
    const float2* q = cs + r * half + c * V;
#pragma unroll
    for (int u = 0; u < V; ++u) {
      const float2 e = q[u];
      const float x0 = a[u], x1 = b[u];
      a[u] = x0 * e.x - x1 * e.y;
      b[u] = x0 * e.y + x1 * e.x;
    }
    store8(out + base, a);
    store8(out + base + half, b);
  }
}

// Fallback (hd/2 not a multiple of the vector width): one thread per pair.
template <class T>
__global__ void rope_scalar_kernel(T* out, const T* in, int Tn, int H, int hd, float sign,
                                   size_t pairs, Freqs f) {
  size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  int half = hd / 2;
  int i = (int)(p % half);
  size_t hrow = p / half;  // (b*T + t)*H + head
  int t = (int)((hrow / H) % Tn);
  const float2 e = rope_cs(t, i, f, sign);
  size_t base = hrow * hd;
  float x0 = to_float(in[base + i]), x1 = to_float(in[base + i + half]);
  out[base + i] = from_float<T>(x0 * e.x - x1 * e.y);
  out[base + i + half] = from_float<T>(x0 * e.y + x1 * e.x);
}

template <class T>
void launch(T* out0, const T* in0, T* out1, const T* in1, int B, int Tn, int H, int hd,
            float sign, cudaStream_t stream) {
  const int rows = B * Tn;
  if (rows <= 0 || H <= 0 || hd < 2) return;
  if (hd / 2 > kMaxHalf) cuda_fail("rope", "head_dim must be <= 256", __FILE__, __LINE__);
  const Freqs f = make_freqs(hd);
  constexpr int V = 8;
  const int half = hd / 2;
  const bool vec = half % V == 0 && aligned16(out0) && aligned16(in0) &&
                   (!out1 || (aligned16(out1) && aligned16(in1)));
  if (vec) {
    const int items = H * (half / V), threads = 256;
    int R = std::max(1, threads / items);
    R = std::min(R, 32);
    const int grid = (rows + R - 1) / R;
    const size_t sh = (size_t)R * half * sizeof(float2);
    rope_vec_kernel<T><<<dim3(grid, out1 ? 2 : 1), threads, sh, stream>>>(
        out0, in0, out1, in1, rows, Tn, H, hd, R, sign, f);
    cudaCheckLaunch();
    return;
  }
  const size_t pairs = (size_t)rows * H * half;
  for (int y = 0; y < (out1 ? 2 : 1); ++y) {
    rope_scalar_kernel<<<(unsigned)((pairs + 255) / 256), 256, 0, stream>>>(
        y ? out1 : out0, y ? in1 : in0, Tn, H, hd, sign, pairs, f);
    cudaCheckLaunch();
  }
}

}  // namespace

template <class T>
void rope_forward(T* out, const T* in, int B, int Tn, int H, int hd, cudaStream_t stream) {
  launch<T>(out, in, nullptr, nullptr, B, Tn, H, hd, 1.f, stream);
}
template <class T>
void rope_backward(T* din, const T* dout, int B, int Tn, int H, int hd, cudaStream_t stream) {
  launch<T>(din, dout, nullptr, nullptr, B, Tn, H, hd, -1.f, stream);
}
template <class T>
void rope_forward2(T* a, T* b, int B, int Tn, int H, int hd, cudaStream_t stream) {
  launch<T>(a, a, b, b, B, Tn, H, hd, 1.f, stream);
}
template <class T>
void rope_backward2(T* a, T* b, int B, int Tn, int H, int hd, cudaStream_t stream) {
  launch<T>(a, a, b, b, B, Tn, H, hd, -1.f, stream);
}

template void rope_forward<float>(float*, const float*, int, int, int, int, cudaStream_t);
template void rope_forward<bf16>(bf16*, const bf16*, int, int, int, int, cudaStream_t);
template void rope_backward<float>(float*, const float*, int, int, int, int, cudaStream_t);
template void rope_backward<bf16>(bf16*, const bf16*, int, int, int, int, cudaStream_t);
template void rope_forward2<float>(float*, float*, int, int, int, int, cudaStream_t);
template void rope_forward2<bf16>(bf16*, bf16*, int, int, int, int, cudaStream_t);
template void rope_backward2<float>(float*, float*, int, int, int, int, cudaStream_t);
template void rope_backward2<bf16>(bf16*, bf16*, int, int, int, int, cudaStream_t);

}  // namespace px::cuda
