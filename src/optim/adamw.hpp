#pragma once
// AdamW over the model's parameter arenas: betas (0.9, 0.95), eps 1e-8, decoupled weight
// decay on matrices only (ParamSpec::decay), global-norm gradient clipping.
// With expert parallelism a rank updates only the routed experts it holds: the expert
// range [expert_begin, expert_end) selects that slice of every expert tensor [E, ...].
// With ZeRO-1 a rank updates only its window [lo, hi) of an arena's flat elements, and its
// moments cover that window alone (m(a)[i] is element lo + i). A pipeline stage's window is
// its layers' elements, and its arenas hold those alone (storage_lo).
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/param_layout.hpp"  // defines: ParamLayout, Arena

namespace px {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0;
  bool sgd = false;  // plain SGD (p -= lr (g + wd p)) instead of Adam: linear in the gradient
};

struct ArenaWindow {
  size_t lo = 0, hi = SIZE_MAX;  // (the default: the whole arena)
};

// ZeRO-1's split of n elements starting at lo over `ranks` ranks: appends every rank's count
// to counts (in rank order) and returns the window of rank `rank`.
inline ArenaWindow zero_shard(size_t lo, size_t n, int rank, int ranks, std::vector<int>& counts) {
  auto begin = [&](int k) { return n * (size_t)k / (size_t)ranks; };
  for (int k = 0; k < ranks; ++k) counts.push_back((int)(begin(k + 1) - begin(k)));
  return {lo + begin(rank), lo + begin(rank + 1)};
}

class AdamW {
 public:
  // storage_lo: the element of arena a at params[a][0] and grads[a][0] (a pipeline stage holds
  // its layers' elements alone; 0: the whole arena).
  AdamW(const ParamLayout& layout, const AdamWConfig& cfg, int expert_begin = 0,
        int expert_end = -1, std::array<ArenaWindow, 2> windows = {},
        std::array<size_t, 2> storage_lo = {0, 0});

  // Sum of squared gradients over this optimizer's slice (and window) of arena a.
  double sq_norm(const float* grads, Arena a) const;
  // Clips by grad_norm (the global norm, computed by the caller across ranks when the
  // gradient is spread over ranks), then one AdamW step at lr. Increments the step count.
  // An arena whose grads pointer is null is left alone (stepped elsewhere).
  void step(float* const params[2], float* const grads[2], double lr, double grad_norm);
  // One rank holding everything: computes the norm itself; returns it.
  double step(float* const params[2], float* const grads[2], double lr);

  int steps_taken() const { return step_; }
  void set_steps_taken(int s) { step_ = s; }
  std::vector<float>& m(Arena a) { return first_moment_[(int)a]; }
  std::vector<float>& v(Arena a) { return second_moment_[(int)a]; }

 private:
  struct Range {
    size_t offset, size;
    bool decay;
  };
  const ParamLayout& layout_;
  AdamWConfig cfg_;
  int step_ = 0;
  std::vector<Range> ranges_[2];
  size_t window_lo_[2] = {0, 0};  // the element of arena a that m(a)[0] belongs to
  std::array<size_t, 2> storage_lo_;  // the element of arena a that params[a][0] is
  std::vector<float> first_moment_[2], second_moment_[2];
};

}  // namespace px
