#pragma once
// Reading fixed-size little-endian fields out of a received message, with bounds checks: the
// one helper the message parsers of the expert tiers share.
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace px {

// Reads a T at p and advances p; throws std::invalid_argument("<message> truncated in <what>")
// when fewer than sizeof(T) bytes are left before end.
template <class T>
T take_field(const uint8_t*& p, const uint8_t* end, const char* message, const char* what) {
  if ((size_t)(end - p) < sizeof(T))
    throw std::invalid_argument(std::string(message) + " truncated in " + what);
  T v;
  std::memcpy(&v, p, sizeof(T));
  p += sizeof(T);
  return v;
}

}  // namespace px
