// defines: rope_forward, rope_backward
#include "rope.cuh"

namespace px::cuda {

namespace {

// sign = +1 forward, -1 backward (rotation by -angle). One thread per pair.
template <class T>
__global__ void rope_kernel(T* out, const T* in, int Tn, int H, int hd, float sign, size_t pairs) {
  size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  int half = hd / 2;
  int i = (int)(p % half);
  size_t hrow = p / half;  // (b*T + t)*H + head
  int t = (int)((hrow / H) % Tn);
  double ang = (double)t * pow(10000.0, -2.0 * i / hd);
  double s, c;
  sincos(ang, &s, &c);
  float cf = (float)c, sf = (float)(sign * s);
  size_t base = hrow * hd;
  float x0 = to_float(in[base + i]), x1 = to_float(in[base + i + half]);
  out[base + i] = from_float<T>(x0 * cf - x1 * sf);
  out[base + i + half] = from_float<T>(x0 * sf + x1 * cf);
}

template <class T>
void launch(T* out, const T* in, int B, int Tn, int H, int hd, float sign, cudaStream_t stream) {
  size_t pairs = (size_t)B * Tn * H * (hd / 2);
  if (!pairs) return;
  rope_kernel<<<(unsigned)((pairs + 255) / 256), 256, 0, stream>>>(out, in, Tn, H, hd, sign, pairs);
  cudaCheckLaunch();
}

}  // namespace

template <class T>
void rope_forward(T* out, const T* in, int B, int Tn, int H, int hd, cudaStream_t stream) {
  launch(out, in, B, Tn, H, hd, 1.f, stream);
}
template <class T>
void rope_backward(T* din, const T* dout, int B, int Tn, int H, int hd, cudaStream_t stream) {
  launch(din, dout, B, Tn, H, hd, -1.f, stream);
}

template void rope_forward<float>(float*, const float*, int, int, int, int, cudaStream_t);
template void rope_forward<bf16>(bf16*, const bf16*, int, int, int, int, cudaStream_t);
template void rope_backward<float>(float*, const float*, int, int, int, int, cudaStream_t);
template void rope_backward<bf16>(bf16*, const bf16*, int, int, int, int, cudaStream_t);

}  // namespace px::cuda
