#pragma once
// Linear warmup from 0 to lr over warmup_steps, then cosine decay to min_lr at total_steps.
#include <cmath>
#include <cstdint>

namespace px {

inline double lr_at(int step, int total_steps, int warmup_steps, double lr, double min_lr) {
  if (warmup_steps > 0 && step < warmup_steps) return lr * (step + 1) / warmup_steps;
  if (step >= total_steps) return min_lr;
  const double span = std::max(1, total_steps - warmup_steps);
  const double t = (step - warmup_steps) / span;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

// The learning rate of training step `step` (1-based: the step that completes it), as
// learners and expert homes use it: lr_at(step - 1, ...).
inline double lr_of_step(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr,
                         double min_lr) {
  return lr_at((int)(step - 1), (int)total_steps, (int)warmup_steps, lr, min_lr);
}

}  // namespace px
