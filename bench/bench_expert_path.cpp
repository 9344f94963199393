// Routed-expert path (permute + grouped SwiGLU experts + combine, forward and backward) over
// a realistic top-k routing, against one plain Eigen GEMM of the same FLOP count.
// Read the ratio off one run: scripts/bench_ratio.sh prints it.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "ops/cpu/cpu_ops.hpp"

using namespace px::cpu;

namespace {

struct Shape {
  int N, d, E, k, h;
};
// 16 sequences x 256 tokens of a d=256 model, 16 experts of hidden 256, top-2.
constexpr Shape kShape{4096, 256, 16, 2, 256};

std::vector<float> randv(size_t n, std::mt19937& rng, float s) {
  std::normal_distribution<float> nd(0.f, s);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// FLOPs of forward (3 GEMMs) + backward (6 GEMMs) of SwiGLU experts over N*k rows.
double expert_flops(const Shape& s) { return 18.0 * s.N * s.k * (double)s.d * s.h; }

void BM_ExpertPathFwdBwd(benchmark::State& state) {
  const Shape s = kShape;
  std::mt19937 rng(1);
  const int R = s.N * s.k;
  auto x = randv((size_t)s.N * s.d, rng, 1.f), wr = randv((size_t)s.d * s.E, rng, 0.1f),
       w1 = randv((size_t)s.E * s.d * s.h, rng, 0.02f), w3 = randv((size_t)s.E * s.d * s.h, rng, 0.02f),
       w2 = randv((size_t)s.E * s.h * s.d, rng, 0.02f), dout = randv((size_t)s.N * s.d, rng, 1.f);
  std::vector<float> logits((size_t)s.N * s.E), probs(logits.size()), gates((size_t)R);
  std::vector<int32_t> idx(R), bounds(s.E + 1), pos(R), row_token(R);
  matmul(logits.data(), x.data(), wr.data(), s.N, s.d, s.E, false, false, false);
  router_forward(probs.data(), idx.data(), gates.data(), logits.data(), (float*)nullptr, s.N, s.E, s.k);
  std::vector<float> xp((size_t)R * s.d), yp(xp.size()), A((size_t)R * s.h), Bm(A.size()),
      act(A.size()), out((size_t)s.N * s.d), dyp(xp.size()), dxp(xp.size()), dx(out.size()),
      dgates(R), dw1(w1.size()), dw3(w3.size()), dw2(w2.size()), s1(A.size()), s2(A.size()),
      s3(A.size());
  for (auto _ : state) {
    moe_permute_build(bounds.data(), pos.data(), row_token.data(), idx.data(), s.N, s.E, s.k);
    gather_rows(xp.data(), x.data(), row_token.data(), R, s.d);
    expert_ffn_forward(yp.data(), A.data(), Bm.data(), act.data(), xp.data(), w1.data(), w3.data(),
                       w2.data(), bounds.data(), s.E, s.d, s.h, EXPERT_ACT_SWIGLU);
    std::fill(out.begin(), out.end(), 0.f);
    combine_rows(out.data(), yp.data(), gates.data(), pos.data(), s.N, s.k, s.d);
    combine_rows_backward(dyp.data(), dgates.data(), dout.data(), yp.data(), gates.data(),
                          pos.data(), s.N, s.k, s.d);
    expert_ffn_backward(dxp.data(), dw1.data(), dw3.data(), dw2.data(), dyp.data(), xp.data(),
                        A.data(), Bm.data(), act.data(), w1.data(), w3.data(), w2.data(),
                        bounds.data(), s.E, s.d, s.h, EXPERT_ACT_SWIGLU, s1.data(), s2.data(),
                        s3.data());
    std::fill(dx.begin(), dx.end(), 0.f);
    scatter_add_rows(dx.data(), dxp.data(), row_token.data(), R, s.d);
    benchmark::DoNotOptimize(dx.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(expert_flops(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ExpertPathFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// One GEMM [N*k, d] x [d, 9h]: the same 18 * N*k * d * h FLOPs in a single product.
void BM_PlainGemmSameFlops(benchmark::State& state) {
  const Shape s = kShape;
  std::mt19937 rng(2);
  const int M = s.N * s.k, K = s.d, N = 9 * s.h;
  auto a = randv((size_t)M * K, rng, 1.f), b = randv((size_t)K * N, rng, 0.02f);
  std::vector<float> c((size_t)M * N);
  for (auto _ : state) {
    matmul(c.data(), a.data(), b.data(), M, K, N, false, false, false);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(expert_flops(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PlainGemmSameFlops)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
