#pragma once
// Model FLOPs utilization of a GPU run (issue: GPU in every mode, item 5): the training FLOPs
// of a token (6 x the active matmul parameters + causal attention, as `parallax plan` counts
// them) times the tokens a GPU trains per second, against the dense bf16 tensor-core peak of
// its device (a table keyed by the CUDA device name, as llm.c does).
#include <string>

#include "model/model_config.hpp"  // defines: ModelConfig

namespace px {

// 6 N_active + 12 L d T / 2 (the attention's q k^T and p v over the causal half).
double train_flops_per_token(const ModelConfig& m);
// The dense bf16 peak in FLOP/s of a device named `name` (cudaDeviceProp::name), 0 when the
// table does not know it.
double peak_bf16_flops(const std::string& name);
// Utilization: tokens_per_s x flops_per_token / peak (0 when peak is 0).
inline double model_flops_utilization(double tokens_per_s, double flops_per_token, double peak) {
  return peak > 0 ? tokens_per_s * flops_per_token / peak : 0.0;
}

}  // namespace px
