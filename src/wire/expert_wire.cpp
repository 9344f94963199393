// defines: the messages and checks of the expert wire framing (expert_wire.hpp)
#include "wire/expert_wire.hpp"

#include <cstdio>
#include <stdexcept>

namespace px::wire {

void malformed(const std::string& what, const std::string& why) {
  throw std::invalid_argument("px::" + what + ": malformed buffer: " + why);
}

void invalid(const std::string& what, const std::string& why) {
  throw std::invalid_argument("px::" + what + ": " + why);
}

std::string shape_str(int in, int out) {
  std::string s = "[";
  return s.append(std::to_string(in)).append(", ").append(std::to_string(out)).append("]");
}

std::string weight_bound_str() {
  char s[32];
  std::snprintf(s, sizeof s, "%g", (double)kViewWeightBound);
  return s;
}

void check_shape(const std::string& what, int in, int out) {
  if (in < 1 || out < 1) invalid(what, "shape " + shape_str(in, out) + " (in and out must be >= 1)");
}

void check_act(const std::string& what, cpu::ExpertAct kind) {
  if (kind != cpu::EXPERT_ACT_SWIGLU && kind != cpu::EXPERT_ACT_RELU2)
    invalid(what, "unknown expert activation " + std::to_string((int)kind));
}

void check_reserved(const std::string& what, unsigned reserved) {
  if (reserved != 0) malformed(what, "reserved field " + std::to_string(reserved) + " (must be 0)");
}

void check_header_shape(const std::string& what, int in, int out) {
  if (in < 1 || out < 1) malformed(what, "shape " + shape_str(in, out) + " (in, out must be >= 1)");
}

void check_matrix_size(const std::string& what, size_t size, size_t need, bool alone, const std::string& shape) {
  if (alone ? size != need : size < need)
    malformed(what, "size " + std::to_string(size) + " bytes, expected " + std::to_string(need) + " for " + shape);
}

}  // namespace px::wire
