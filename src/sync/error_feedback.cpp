// Error feedback: see error_feedback.hpp.
#include "sync/error_feedback.hpp"

#include <algorithm>

namespace px {

ErrorFeedback::ErrorFeedback(size_t n) : residual_(n, 0.0f), scratch_(n, 0.0f) {}

void ErrorFeedback::reset() { std::fill(residual_.begin(), residual_.end(), 0.0f); }

void ErrorFeedback::encode(WireDtype dtype, const float* x, uint8_t* out) {
  const size_t n = residual_.size();
  float* v = scratch_.data();
  for (size_t i = 0; i < n; ++i) v[i] = x[i] + residual_[i];
  px::encode(dtype, v, n, out);  // throws on non-finite v before the residual is touched
  if (dtype == WireDtype::FP32) {
    reset();  // lossless
    return;
  }
  // v - decoded, rounded once: fma(-1, d, v) == v - d exactly.
  decode_add(dtype, out, n, v, -1.0f);
  residual_.swap(scratch_);
}

}  // namespace px
