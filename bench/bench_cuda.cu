// CUDA backend benchmarks (plain executable, prints a table; run on a GPU machine):
//  1. grouped expert FFN (SwiGLU, forward + backward) vs one cuBLASLt dense bf16 GEMM of the
//     same total FLOPs (ratio of GFLOP/s, goal >= 0.7);
//  2. sketch packing (sample + gather + int8 quantize) bandwidth vs cudaMemcpy D2D of the
//     same bytes (goal >= 0.6).
// Timing: cudaEvents, warm-up, median of many repeats, random data.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <random>
#include <vector>

#include "cuda_common.cuh"   // defines: cudaCheck, bf16
#include "expert_ffn.cuh"    // defines: px::cuda::expert_ffn_forward/backward
#include "expert_ffn_sm90.cuh"  // defines: px::cuda::expert_ffn_{forward,backward}_sm90
#include "matmul_lt.cuh"     // defines: px::cuda::matmul
#include "moe_permute.cuh"   // defines: px::cuda::moe_permute_build
#if __has_include("sketch_pack.cuh")
#include "sketch_pack.cuh"   // defines: px::cuda::sketch_pack
#define PX_HAVE_SKETCH 1
#endif

using px::cuda::bf16;

namespace {

float median_ms(const std::function<void()>& f, int warm = 3, int reps = 25) {
  for (int i = 0; i < warm; ++i) f();
  cudaCheck(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  cudaCheck(cudaEventCreate(&a));
  cudaCheck(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    cudaCheck(cudaEventRecord(a));
    f();
    cudaCheck(cudaEventRecord(b));
    cudaCheck(cudaEventSynchronize(b));
    float ms = 0;
    cudaCheck(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaCheck(cudaEventDestroy(a));
  cudaCheck(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <class T>
T* dalloc(size_t n) {
  T* p;
  cudaCheck(cudaMalloc(&p, n * sizeof(T) + 16));
  return p;
}
bf16* drandn_bf16(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<bf16> h(n);
  for (auto& x : h) x = __float2bfloat16(d(g));
  bf16* p = dalloc<bf16>(n);
  cudaCheck(cudaMemcpy(p, h.data(), n * sizeof(bf16), cudaMemcpyHostToDevice));
  return p;
}

// Top-k routing with mildly skewed expert popularity (like a trained router).
std::vector<int32_t> routing(int N, int E, int k, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<double> w(E);
  for (int e = 0; e < E; ++e) w[e] = 1.0 / (1.0 + 0.03 * e);
  std::vector<int32_t> idx((size_t)N * k);
  for (int n = 0; n < N; ++n) {
    std::vector<double> ww = w;
    for (int j = 0; j < k; ++j) {
      std::discrete_distribution<int> d(ww.begin(), ww.end());
      int e = d(g);
      idx[(size_t)n * k + j] = e;
      ww[e] = 0;
    }
  }
  return idx;
}


// Ceiling of the mma.sync path on this device: warps issuing only independent
// mma.sync.m16n8k16 bf16 (fp32 accumulate) on register operands (no memory traffic).
__global__ void mma_peak_kernel(float* out, int iters) {
  uint32_t a[4], b0 = 0x3f803f81u ^ (threadIdx.x & 7), b1 = 0x3f813f80u;
  for (int q = 0; q < 4; ++q) a[q] = 0x3c003c01u + 65537u * (threadIdx.x & 15) + q;
  float acc[16][4] = {};
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int j = 0; j < 16; ++j)
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
          "{%8,%9}, {%0,%1,%2,%3};\n"
          : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  float sum = 0.f;
  for (int j = 0; j < 16; ++j) sum += acc[j][0] + acc[j][1] + acc[j][2] + acc[j][3];
  out[blockIdx.x * blockDim.x + threadIdx.x] = sum;
}

void bench_mma_peak() {
  int sms = 0;
  cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int iters = 4096;
  for (int per_sm : {1, 2, 4}) {
    for (int threads : {128, 256}) {
      int blocks = sms * per_sm;
      float* out = dalloc<float>((size_t)blocks * threads);
      float t = median_ms([&] {
        mma_peak_kernel<<<blocks, threads>>>(out, iters);
        cudaCheck(cudaGetLastError());
      }, 2, 9);
      double fl = 2.0 * 16 * 8 * 16 * 16.0 * iters * (double)blocks * (threads / 32);
      std::printf("mma.sync peak: %d blocks/SM x %d threads: %8.1f GFLOP/s\n", per_sm, threads,
                  fl / t / 1e6);
      cudaCheck(cudaFree(out));
    }
  }
}

void bench_expert_ffn(int N, int E, int k, int d, int h) {
  int rows = N * k;
  auto idx = routing(N, E, k, 42 + E);
  int32_t *didx = dalloc<int32_t>(idx.size()), *bounds = dalloc<int32_t>(E + 1),
          *pos = dalloc<int32_t>(rows), *rt = dalloc<int32_t>(rows);
  cudaCheck(cudaMemcpy(didx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
  char* scratch = dalloc<char>(px::cuda::moe_permute_scratch_bytes(N, E, k));
  px::cuda::moe_permute_build(bounds, pos, rt, didx, N, E, k, 1, scratch);
  bf16* X = drandn_bf16((size_t)rows * d, 1, 1.f);
  bf16* dY = drandn_bf16((size_t)rows * d, 2, 1.f);
  bf16* W1 = drandn_bf16((size_t)E * d * h, 3, 0.02f);
  bf16* W3 = drandn_bf16((size_t)E * d * h, 4, 0.02f);
  bf16* W2 = drandn_bf16((size_t)E * h * d, 5, 0.02f);
  bf16 *Y = dalloc<bf16>((size_t)rows * d), *A = dalloc<bf16>((size_t)rows * h),
       *Bm = dalloc<bf16>((size_t)rows * h), *act = dalloc<bf16>((size_t)rows * h),
       *dX = dalloc<bf16>((size_t)rows * d), *dA = dalloc<bf16>((size_t)rows * h),
       *dB = dalloc<bf16>((size_t)rows * h);
  float *dW1 = dalloc<float>((size_t)E * d * h), *dW3 = dalloc<float>((size_t)E * d * h),
        *dW2 = dalloc<float>((size_t)E * h * d);
  cudaCheck(cudaMemset(dW1, 0, (size_t)E * d * h * 4));
  cudaCheck(cudaMemset(dW3, 0, (size_t)E * d * h * 4));
  cudaCheck(cudaMemset(dW2, 0, (size_t)E * d * h * 4));
  auto kind = px::cpu::EXPERT_ACT_SWIGLU;
  auto fwd = [&] {
    px::cuda::expert_ffn_forward(Y, A, Bm, act, X, W1, W3, W2, bounds, rows, E, d, h, kind);
  };
  auto bwd = [&] {
    px::cuda::expert_ffn_backward(dX, dW1, dW3, dW2, dY, X, A, Bm, act, W1, W3, W2, bounds, rows,
                                  E, d, h, kind, dA, dB);
  };
  float tf = median_ms(fwd), tb = median_ms(bwd);
  // Per-phase view (forward up/down, backward dact/dW2/dW1dW3/dX) via separate runs with
  // null weight-gradient pointers: bwd without dW = dact + dX.
  float tb_nodw = median_ms([&] {
    px::cuda::expert_ffn_backward(dX, nullptr, nullptr, nullptr, dY, X, A, Bm, act, W1, W3, W2,
                                  bounds, rows, E, d, h, kind, dA, dB);
  });
  double fl_f = 6.0 * rows * d * h, fl_b = 12.0 * rows * d * h;
  // Dense reference: one cuBLASLt bf16 GEMM [rows, d] x [d, 9h] = 18 rows d h FLOPs.
  bf16* Wd = drandn_bf16((size_t)d * 9 * h, 6, 0.02f);
  bf16* C = dalloc<bf16>((size_t)rows * 9 * h);
  float td = median_ms([&] { px::cuda::matmul(C, X, Wd, rows, d, 9 * h, false, false, false); });
  // Same-shape dense of only the forward up-projection (for context).
  double g_f = fl_f / tf / 1e6, g_b = fl_b / tb / 1e6, g_fb = (fl_f + fl_b) / (tf + tb) / 1e6,
         g_d = (fl_f + fl_b) / td / 1e6;
  std::printf("expert_ffn swiglu N=%d E=%d top_k=%d d=%d h=%d rows=%d\n", N, E, k, d, h, rows);
  std::printf("  forward   %8.3f ms  %8.1f GFLOP/s\n", tf, g_f);
  std::printf("  backward  %8.3f ms  %8.1f GFLOP/s\n", tb, g_b);
  std::printf("    bwd dact+dX (no dW) %8.3f ms  %8.1f GFLOP/s; dW2+dW1+dW3 %8.3f ms  %8.1f GFLOP/s\n",
              tb_nodw, 6.0 * rows * d * h / tb_nodw / 1e6, tb - tb_nodw,
              6.0 * rows * d * h / (tb - tb_nodw) / 1e6);
  std::printf("  fwd+bwd   %8.3f ms  %8.1f GFLOP/s\n", tf + tb, g_fb);
  std::printf("  dense cuBLASLt bf16 GEMM %dx%dx%d (same FLOPs) %8.3f ms  %8.1f GFLOP/s\n", rows,
              d, 9 * h, td, g_d);
  std::printf("  RATIO grouped/dense = %.3f (goal >= 0.7)\n", g_fb / g_d);
  // Hopper wgmma path (expert_ffn_sm90), same data; its Y and dX are checked against the
  // mma.sync path's first (relative L2 difference).
  if (px::cuda::expert_ffn_sm90_available()) {
    auto rel_diff = [&](const bf16* a, const bf16* b, size_t n) {
      std::vector<bf16> ha(n), hb(n);
      cudaCheck(cudaMemcpy(ha.data(), a, n * 2, cudaMemcpyDeviceToHost));
      cudaCheck(cudaMemcpy(hb.data(), b, n * 2, cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      for (size_t i = 0; i < n; ++i) {
        double x = __bfloat162float(ha[i]), y = __bfloat162float(hb[i]);
        num += (x - y) * (x - y);
        den += y * y;
      }
      return std::sqrt(num / (den > 0 ? den : 1));
    };
    bf16* Y0 = dalloc<bf16>((size_t)rows * d);
    bf16* dX0 = dalloc<bf16>((size_t)rows * d);
    fwd();
    bwd();
    cudaCheck(cudaMemcpy(Y0, Y, (size_t)rows * d * 2, cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpy(dX0, dX, (size_t)rows * d * 2, cudaMemcpyDeviceToDevice));
    auto fwd90 = [&] {
      px::cuda::expert_ffn_forward_sm90(Y, A, Bm, act, X, W1, W3, W2, bounds, rows, E, d, h,
                                        kind);
    };
    auto bwd90 = [&] {
      px::cuda::expert_ffn_backward_sm90(dX, dW1, dW3, dW2, dY, X, A, Bm, act, W1, W3, W2,
                                         bounds, rows, E, d, h, kind, dA, dB);
    };
    fwd90();
    bwd90();
    cudaCheck(cudaDeviceSynchronize());
    const double eY = rel_diff(Y, Y0, (size_t)rows * d), edX = rel_diff(dX, dX0, (size_t)rows * d);
    float tf9 = median_ms(fwd90), tb9 = median_ms(bwd90);
    float tb9_nodw = median_ms([&] {
      px::cuda::expert_ffn_backward_sm90(dX, nullptr, nullptr, nullptr, dY, X, A, Bm, act, W1,
                                         W3, W2, bounds, rows, E, d, h, kind, dA, dB);
    });
    double g_fb9 = (fl_f + fl_b) / (tf9 + tb9) / 1e6;
    std::printf("  sm90 wgmma path (rel. diff vs mma.sync: Y %.2e, dX %.2e)\n", eY, edX);
    std::printf("    forward   %8.3f ms  %8.1f GFLOP/s\n", tf9, fl_f / tf9 / 1e6);
    std::printf("    backward  %8.3f ms  %8.1f GFLOP/s (dact+dX %8.3f ms  %8.1f GFLOP/s; dW on mma.sync)\n",
                tb9, fl_b / tb9 / 1e6, tb9_nodw, 6.0 * rows * d * h / tb9_nodw / 1e6);
    std::printf("    fwd+bwd   %8.3f ms  %8.1f GFLOP/s\n", tf9 + tb9, g_fb9);
    std::printf("  RATIO sm90 grouped/dense = %.3f (goal >= 0.7)\n", g_fb9 / g_d);
    cudaCheck(cudaFree(Y0));
    cudaCheck(cudaFree(dX0));
  } else {
    std::printf("  sm90 wgmma path: skipped (device is not sm_90)\n");
  }
  for (void* p : {(void*)didx, (void*)bounds, (void*)pos, (void*)rt, (void*)scratch, (void*)X,
                  (void*)dY, (void*)W1, (void*)W3, (void*)W2, (void*)Y, (void*)A, (void*)Bm,
                  (void*)act, (void*)dX, (void*)dA, (void*)dB, (void*)dW1, (void*)dW3,
                  (void*)dW2, (void*)Wd, (void*)C})
    cudaCheck(cudaFree(p));
}

#ifdef PX_HAVE_SKETCH
void bench_sketch(int N, int E, int k, int d, int tokens, px::SketchElem dtype) {
  int rows = N * k;
  auto idx = routing(N, E, k, 77);
  int32_t *didx = dalloc<int32_t>(idx.size()), *bounds = dalloc<int32_t>(E + 1),
          *pos = dalloc<int32_t>(rows), *rt = dalloc<int32_t>(rows);
  cudaCheck(cudaMemcpy(didx, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
  char* scratch = dalloc<char>(px::cuda::moe_permute_scratch_bytes(N, E, k));
  px::cuda::moe_permute_build(bounds, pos, rt, didx, N, E, k, 1, scratch);
  bf16* X = drandn_bf16((size_t)rows * d, 11, 1.f);
  bf16* dY = drandn_bf16((size_t)rows * d, 12, 1.f);
  px::cuda::SketchBuffers sb = px::cuda::sketch_alloc(E, tokens, d, rows, dtype);
  int step = 0;
  auto f = [&] { px::cuda::sketch_pack(sb, X, dY, bounds, rows, E, d, tokens, 1234, ++step); };
  float tp = median_ms(f);
  // Bytes moved by packing: read n rows of X and dY (bf16) per expert + write the codes (1 or
  // 2 bytes per value) + scales, plus reading all rows once for the importance norms.
  std::vector<int32_t> hb(E + 1);
  cudaCheck(cudaMemcpy(hb.data(), bounds, (E + 1) * 4, cudaMemcpyDeviceToHost));
  double sampled = 0;
  for (int e = 0; e < E; ++e) sampled += std::min(tokens, hb[e + 1] - hb[e]);
  const int eb = px::sketch_elem_bytes(dtype);
  double bytes = 2.0 * rows * d * 2 + sampled * 2 * d * 2 + sampled * 2 * (d * eb + 4);
  char* a = dalloc<char>((size_t)bytes);
  char* b = dalloc<char>((size_t)bytes);
  float tm = median_ms([&] { cudaCheck(cudaMemcpyAsync(b, a, (size_t)bytes, cudaMemcpyDeviceToDevice)); });
  double bw_p = bytes / tp / 1e6, bw_m = bytes / tm / 1e6;
  static const char* names[] = {"int8", "fp8", "bf16"};
  std::printf("sketch_pack %s N=%d E=%d top_k=%d d=%d tokens/expert=%d (%.1f MB moved)\n",
              names[dtype], N, E, k, d, tokens, bytes / 1e6);
  std::printf("  sketch_pack %8.3f ms  %8.1f GB/s\n", tp, bw_p);
  std::printf("  cudaMemcpy D2D same bytes %8.3f ms  %8.1f GB/s\n", tm, bw_m);
  std::printf("  RATIO pack/memcpy = %.3f (goal >= 0.6)\n", bw_p / bw_m);
  px::cuda::sketch_free(sb);
  for (void* p : {(void*)didx, (void*)bounds, (void*)pos, (void*)rt, (void*)scratch, (void*)X,
                  (void*)dY, (void*)a, (void*)b})
    cudaCheck(cudaFree(p));
}

#endif
}  // namespace

int main(int argc, char** argv) {
  if (!px::cuda::device_available()) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return 0;
  }
  cudaDeviceProp prop;
  cudaCheck(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  bool only_ffn = argc > 1 && std::string(argv[1]) == "ffn";
  if (argc > 1 && std::string(argv[1]) == "mma") {
    bench_mma_peak();
    return 0;
  }
  bench_expert_ffn(16384, 64, 8, 1024, 512);
  bench_expert_ffn(16384, 16, 2, 1024, 512);
#ifdef PX_HAVE_SKETCH
  if (!only_ffn) {
    for (px::SketchElem t : {px::SKETCH_INT8, px::SKETCH_FP8, px::SKETCH_BF16}) {
      bench_sketch(16384, 64, 8, 1024, 256, t);
      bench_sketch(16384, 16, 2, 1024, 512, t);
    }
  }
#endif
  return 0;
}
