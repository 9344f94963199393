#pragma once
// Base-3 packing of trits q in {-1, 0, 1}, five per byte (3^5 = 243 <= 256): the one rule of
// the TERNARY backbone codec (sync/codec.hpp) and of the ternary expert views
// (model/ternary_view.hpp). Little digit first: byte = sum_{j<5} (q_j + 1) * 3^j, so a valid byte
// is <= 242; a partial last group pads with q = 0 (digit 1).
#include <array>
#include <cstddef>
#include <cstdint>

namespace px {

inline constexpr size_t kTritsPerByte = 5;  // 3^5 = 243 <= 256
inline constexpr uint8_t kMaxTritByte = 242;  // 3^5 - 1: every digit 2

// Bytes holding n trits.
constexpr size_t trit_bytes(size_t n) { return (n + kTritsPerByte - 1) / kTritsPerByte; }

// The byte of five digits d_j = q_j + 1 in {0, 1, 2}.
constexpr uint8_t trit_byte(const uint8_t* digit) {
  return static_cast<uint8_t>(digit[0] + 3 * digit[1] + 9 * digit[2] + 27 * digit[3] + 81 * digit[4]);
}

// The five trits (q in {-1, 0, 1}) of each valid byte 0..242, little digit first.
inline constexpr auto kTritTable = [] {
  std::array<std::array<int8_t, kTritsPerByte>, kMaxTritByte + 1> t{};
  for (int byte = 0; byte <= kMaxTritByte; ++byte) {
    int b = byte;
    for (size_t j = 0; j < kTritsPerByte; ++j, b /= 3) t[byte][j] = static_cast<int8_t>(b % 3 - 1);
  }
  return t;
}();

// Writes trits one at a time to consecutive bytes from `out`; finish() writes the partial last
// byte (padded with q = 0), so that n trits fill exactly trit_bytes(n) bytes.
class TritWriter {
 public:
  explicit TritWriter(uint8_t* out) : out_(out) {}
  void put(int q) {
    digit_[filled_++] = static_cast<uint8_t>(q + 1);
    if (filled_ == kTritsPerByte) {
      *out_++ = trit_byte(digit_);
      filled_ = 0;
    }
  }
  // Returns the end of what was written.
  uint8_t* finish() {
    if (filled_) {
      for (size_t j = filled_; j < kTritsPerByte; ++j) digit_[j] = 1;
      *out_++ = trit_byte(digit_);
      filled_ = 0;
    }
    return out_;
  }

 private:
  uint8_t* out_;
  uint8_t digit_[kTritsPerByte] = {};
  size_t filled_ = 0;
};

}  // namespace px
