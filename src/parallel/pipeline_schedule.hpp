#pragma once
// The 1F1B pipeline schedule (PipeDream-Flush, as Megatron-LM runs it): stage s of P, with M
// micro-batches, runs min(P - 1 - s, M) warm-up forwards, then alternates one forward and one
// backward, then drains the remaining backwards. Stage s never holds more than
// min(P - s, M) micro-batches' activations (pipeline_slots), and a micro-batch's backward on
// a stage comes after that stage's forward of it and after the next stage's backward of it.
#include <vector>

namespace px {

struct PipelineOp {
  bool forward;  // else backward
  int micro;     // micro-batch index in [0, M)
};

// The first layer of stage `stage` of `stages` over n_layers layers. topology.pipeline_split
// "even" (ends = false): stage s holds [s L / P, (s+1) L / P) (the later stages get the extra
// layers of an uneven split). "ends" (ends = true): the embedding and the head count as one
// layer each (Megatron's account-for-embedding split), so that the first and last stages hold
// fewer transformer layers: stage s starts at round(s (L + 2) / P) - 1 (clamped to [0, L]).
inline int pipeline_layer_begin(int stage, int stages, int n_layers, bool ends) {
  if (!ends || stage == 0 || stage == stages) return (int)((long long)stage * n_layers / stages);
  const long long r = (2LL * stage * (n_layers + 2) + stages) / (2LL * stages) - 1;  // (rounded)
  return (int)(r < 0 ? 0 : r > n_layers ? n_layers : r);
}

// The MoE layers [lo, hi) of stage `stage` (MoE layer m is layer dense_layers + m); all of
// them when stages = 1.
struct MoeLayerRange {
  int lo = 0, hi = 0;
  bool holds(int moe_layer) const { return moe_layer >= lo && moe_layer < hi; }
  int count() const { return hi - lo; }
};
inline MoeLayerRange stage_moe_layers(int stage, int stages, int n_layers, int dense_layers, bool ends) {
  auto moe_of = [&](int layer) { return layer > dense_layers ? layer - dense_layers : 0; };
  return {moe_of(pipeline_layer_begin(stage, stages, n_layers, ends)),
          moe_of(pipeline_layer_begin(stage + 1, stages, n_layers, ends))};
}

inline int pipeline_slots(int stage, int stages, int micro_batches) {
  const int in_flight = stages - stage;
  return in_flight < micro_batches ? in_flight : micro_batches;
}

inline std::vector<PipelineOp> one_f_one_b(int stage, int stages, int micro_batches) {
  const int warmup = stages - 1 - stage < micro_batches ? stages - 1 - stage : micro_batches;
  std::vector<PipelineOp> ops;
  ops.reserve(2 * (size_t)micro_batches);
  for (int i = 0; i < warmup; ++i) ops.push_back({true, i});
  for (int i = warmup; i < micro_batches; ++i) {
    ops.push_back({true, i});
    ops.push_back({false, i - warmup});
  }
  for (int i = micro_batches - warmup; i < micro_batches; ++i) ops.push_back({false, i});
  return ops;
}

}  // namespace px
