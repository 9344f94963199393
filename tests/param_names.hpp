#pragma once
// Readable parameterised tests: the config enums (config.hpp EnumNames: ExpertActKind,
// BalanceKind, WireDtype, ...) print by their TOML spelling in gtest messages ("swiglu", not
// "4-byte object <00-00 00-00>"), and name_of() turns them into instance names
// (GradModel.FullLossAllParameters/swiglu_aux_shared1 instead of /0).
#include <ostream>
#include <string>

#include "config/config.hpp"  // defines: EnumNames, to_string

namespace px {

// Found by argument-dependent lookup from gtest's printer (more constrained than its own).
template <class E>
  requires requires { EnumNames<E>::v; }
void PrintTo(const E& e, std::ostream* os) {
  *os << to_string(e);
}

namespace test {

template <class E>
  requires requires { EnumNames<E>::v; }
std::string name_of(E e) {
  return std::string(to_string(e));
}

}  // namespace test
}  // namespace px
