#pragma once
// Error feedback for the lossy outer-gradient codecs (DESIGN §5 item 2: "with error feedback for
// the lossy ones"). Each call compresses v = x + residual and keeps what the wire lost:
//   residual <- v - decode(encode(v))        (fp32 arithmetic, exactly this subtraction)
// so over T calls  sum_t decoded_t = sum_t x_t - residual_T : the transmitted sum never drifts
// from the true sum by more than one step's quantization error (codec.hpp gives the per-dtype
// bound, applied to v_T). For FP32 the codec is exact and the residual stays zero.
// The residual is training state: it belongs in checkpoints (residual() exposes it).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sync/codec.hpp"  // defines: WireDtype, encode, decode_add, encoded_bytes

namespace px {

class ErrorFeedback {
 public:
  explicit ErrorFeedback(size_t n);

  size_t size() const { return residual_.size(); }

  // Encodes x[0..size()) + residual into out[0..encoded_bytes(dtype, size())) and updates the
  // residual. Throws std::invalid_argument (residual unchanged) if x + residual is not finite.
  void encode(WireDtype dtype, const float* x, uint8_t* out);

  // The residual carried to the next call (save/restore it with checkpoints).
  std::vector<float>& residual() { return residual_; }
  const std::vector<float>& residual() const { return residual_; }

  void reset();  // residual = 0

 private:
  std::vector<float> residual_;
  std::vector<float> scratch_;  // v = x + residual, then v - decoded; swapped with residual_
};

}  // namespace px
