#pragma once
// The CUDA backend behind a learner (train.device = "cuda"): the whole training step on one
// GPU (kernels/cuda_model), with the host model and AdamW as the mirror that checkpoints read
// and write. This file's .cpp is the one place that knows whether CUDA was compiled in.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/moe_model.hpp"  // defines: MoeModel, ModelConfig
#include "optim/adamw.hpp"      // defines: AdamW

namespace px {

class GpuStepper {
 public:
  // Throws UserError when this build has no CUDA backend or no GPU is visible.
  static void require();
  // The GPU's name ("" without CUDA).
  static std::string device_name();
  GpuStepper(const ModelConfig& cfg, int batch, int seq);
  ~GpuStepper();
  // Parameters, AdamW moments and step count: host -> GPU and GPU -> host.
  void upload(MoeModel<float>& host, AdamW& opt);
  void download(MoeModel<float>& host, AdamW& opt);
  struct Result {
    double ce, aux, grad_norm;
    std::vector<int64_t> counts;
  };
  Result step(const int32_t* inputs, const int32_t* targets, double lr, double grad_clip,
              double weight_decay);
  double eval(const int32_t* inputs, const int32_t* targets);  // mean CE

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace px
