#pragma once
// AdamW over the model's parameter arenas: betas (0.9, 0.95), eps 1e-8, decoupled weight
// decay on matrices only (ParamSpec::decay), global-norm gradient clipping.
#include <cstddef>
#include <vector>

#include "model/param_layout.hpp"  // defines: ParamLayout, Arena

namespace px {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0;
};

class AdamW {
 public:
  AdamW(const ParamLayout& layout, const AdamWConfig& cfg);

  // sqrt of the sum of squares of all gradients (both arenas).
  static double global_norm(const ParamLayout& layout, float* const grads[2]);
  // Clips (scales grads by clip/norm when norm > clip), then one AdamW step at lr.
  // Returns the gradient norm before clipping. step_ is incremented first (1-based).
  double step(float* const params[2], float* const grads[2], double lr);

  int steps_taken() const { return step_; }
  void set_steps_taken(int s) { step_ = s; }
  std::vector<float>& m(Arena a) { return m_[(int)a]; }
  std::vector<float>& v(Arena a) { return v_[(int)a]; }

 private:
  const ParamLayout& layout_;
  AdamWConfig cfg_;
  int step_ = 0;
  std::vector<float> m_[2], v_[2];
};

}  // namespace px
