// One full training step (forward, backward, AdamW) of the tiny and small configs.
#include <benchmark/benchmark.h>

#include <vector>

#include "model/moe_model.hpp"
#include "optim/adamw.hpp"

using namespace px;

namespace {

ModelConfig tiny() { return ModelConfig{}; }  // the defaults are experiments/tiny.toml's model
ModelConfig small() {
  ModelConfig c;
  c.d_model = 128, c.n_layers = 4, c.n_heads = 4, c.vocab = 2048, c.seq_len = 128;
  c.dense_layers = 1, c.n_experts = 16, c.top_k = 2, c.n_shared = 1, c.expert_hidden = 128;
  c.dense_hidden = 512;
  return c;
}

void run_step(benchmark::State& state, const ModelConfig& c, int B) {
  MoeModel<float> m(c, B, c.seq_len);
  m.init_params(1);
  AdamW opt(m.layout(), AdamWConfig{});
  std::vector<int32_t> in((size_t)B * c.seq_len), tg(in.size());
  for (size_t i = 0; i < in.size(); ++i) in[i] = (int32_t)((i * 2654435761u) % c.vocab), tg[i] = in[(i + 1) % in.size()];
  float* const P[2] = {m.params(Arena::BACKBONE), m.params(Arena::EXPERTS)};
  float* const G[2] = {m.grads(Arena::BACKBONE), m.grads(Arena::EXPERTS)};
  for (auto _ : state) {
    m.zero_grad();
    benchmark::DoNotOptimize(m.forward(in.data(), tg.data()));
    m.backward();
    opt.step(P, G, 1e-3);
  }
  state.counters["tokens/s"] = benchmark::Counter((double)B * c.seq_len,
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TrainStepTiny(benchmark::State& s) { run_step(s, tiny(), 8); }
void BM_TrainStepSmall(benchmark::State& s) { run_step(s, small(), 16); }
BENCHMARK(BM_TrainStepTiny)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainStepSmall)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
