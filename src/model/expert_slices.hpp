#pragma once
// Where one routed expert's weights sit in the experts arena, and its activation kind as the
// CPU ops name it: the helpers the expert homes, views, adapters and parallax experts share.
#include <cstddef>

#include "model/model_config.hpp"  // defines: ModelConfig
#include "model/param_layout.hpp"  // defines: ParamLayout
#include "ops/cpu/cpu_ops.hpp"     // defines: ExpertAct

namespace px {

inline cpu::ExpertAct expert_act_of(const ModelConfig& mc) {
  return mc.expert_act == ExpertActKind::SWIGLU ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2;
}

// Element offset of routed expert e of MoE layer m (0-based among the MoE layers) in the
// experts arena: which = 0 (W1 [d, h]), 1 (W3 [d, h]), 2 (W2 [h, d]).
inline size_t expert_offset(const ModelConfig& mc, const ParamLayout& layout, int m, int e,
                            int which) {
  const LayerOffsets& offsets = layout.layers[mc.dense_layers + m];
  const size_t base = which == 0 ? offsets.expert_w1 : which == 1 ? offsets.expert_w3 : offsets.expert_w2;
  return base + (size_t)e * mc.d_model * mc.expert_hidden;
}

}  // namespace px
