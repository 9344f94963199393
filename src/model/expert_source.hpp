#pragma once
// Where a routed expert's starting weights come from when a home or a view is built: an
// experts arena that holds them (a resumed or assembled model), or the run's initializer,
// which computes one expert at a time (model/param_init.hpp), so that a role holds only the
// experts it keeps.
#include <cstdint>
#include <vector>

#include "model/model_config.hpp"  // defines: ModelConfig
#include "model/param_layout.hpp"  // defines: ParamLayout

namespace px {

class ExpertSource {
 public:
  // The experts of an arena (not copied: it must outlive the source's use).
  static ExpertSource arena(const ModelConfig& mc, const ParamLayout& layout, const float* experts_arena);
  // The run's initial experts for train.seed = seed.
  static ExpertSource initial(const ModelConfig& mc, const ParamLayout& layout, uint64_t seed);

  // Expert e of MoE layer m: W1 [d, h], W3 [d, h] (null unless SwiGLU), W2 [h, d]. The
  // pointers stay valid until the next call.
  void get(int m, int e, const float** W1, const float** W3, const float** W2) const;

 private:
  ExpertSource(const ModelConfig& mc, const ParamLayout& layout) : mc_(mc), layout_(layout) {}
  const ModelConfig& mc_;
  const ParamLayout& layout_;
  const float* arena_ = nullptr;
  uint64_t seed_ = 0;
  mutable std::vector<float> one_;  // the initializer's last expert: W1, W3, W2
};

}  // namespace px
