// defines: train_flops_per_token, peak_bf16_flops
#include "train/mfu.hpp"

#include <utility>

#include "model/param_layout.hpp"  // defines: ParamLayout

namespace px {

double train_flops_per_token(const ModelConfig& m) {
  const ParamLayout L(m);
  const double d = m.d_model, per_expert = (m.expert_act == ExpertActKind::SWIGLU ? 3.0 : 2.0) * d * m.expert_hidden;
  // active matmul parameters per token (the embedding lookup is not a product)
  const double active = (double)L.backbone_size - (double)m.vocab * d + m.moe_layers() * m.top_k * per_expert;
  return 6.0 * active + 12.0 * m.n_layers * d * m.seq_len / 2.0;  // causal: half the T x T
}

double peak_bf16_flops(const std::string& name) {
  // dense (not sparse) bf16 tensor-core peaks of the vendors' datasheets; the first entry whose
  // key the name contains wins (the PCIe H100 before the SXM one)
  static const std::pair<const char*, double> kPeaks[] = {
      {"H100 PCIe", 756e12}, {"H100 NVL", 835e12}, {"H100", 989.4e12}, {"H200", 989.4e12},
      {"A100", 312e12},      {"L40S", 362.05e12}, {"RTX 4090", 165.2e12}, {"RTX 3090", 71e12},
  };
  for (const auto& [key, peak] : kPeaks)
    if (name.find(key) != std::string::npos) return peak;
  return 0;
}

}  // namespace px
