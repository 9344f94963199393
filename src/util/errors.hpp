#pragma once
// Error types shared by every module.
//  - UserError: bad input from the user (config field, data path, checkpoint file). The
//    message names the field or file, the value, and what is allowed. The CLI prints it and
//    exits with code 2.
#include <stdexcept>
#include <string>

namespace px {

struct UserError : std::runtime_error {
  explicit UserError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace px
