#include <benchmark/benchmark.h>
static void BM_nothing(benchmark::State& s) { for (auto _ : s) benchmark::DoNotOptimize(s.iterations()); }
BENCHMARK(BM_nothing);
BENCHMARK_MAIN();
