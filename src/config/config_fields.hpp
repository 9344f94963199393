#pragma once
// The config's field table (internal to src/config/): one descriptor per field, shared by the
// TOML parser, the override parser, config_to_toml, operator== and validate_config.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"  // defines: Config

namespace px::cfg {

// A field's value in the type the table works with (ints widened to int64, enums as strings).
using FieldValue = std::variant<int64_t, double, bool, std::string>;

enum class FieldType { INT, FLOAT, BOOL, STRING, CHOICE };

// One end of a field's allowed range: none, a constant, or the value of another field.
struct Bound {
  enum Kind { NONE, CONST, FIELD } kind = NONE;
  double value = 0;
  std::string field;  // "section.key" when kind == FIELD
  bool open = false;  // exclusive (> or <) instead of inclusive
};
inline Bound ge(double v) { return {Bound::CONST, v, {}, false}; }
inline Bound gt(double v) { return {Bound::CONST, v, {}, true}; }
inline Bound le(double v) { return {Bound::CONST, v, {}, false}; }
inline Bound lt(double v) { return {Bound::CONST, v, {}, true}; }
inline Bound le_field(const char* f) { return {Bound::FIELD, 0, f, false}; }
inline Bound none() { return {}; }

struct FieldDesc {
  std::string section;  // "model"
  std::string key;      // "top_k"
  FieldType type;
  std::vector<std::string_view> choices;  // allowed spellings (CHOICE)
  Bound lo, hi;                           // allowed range (INT, FLOAT)
  std::string help;                       // one-line comment for config_to_toml
  std::function<FieldValue(const Config&)> get;
  // Stores a value of the field's type (the caller converts first). Throws UserError when an
  // integer does not fit the member or a choice is not one of `choices`.
  std::function<void(Config&, const FieldValue&)> set;

  std::string name() const { return section + "." + key; }
};

// Every field, grouped by section in the order of Config's members.
const std::vector<FieldDesc>& config_fields();

// The section names, in order.
const std::vector<std::string>& config_sections();

// The descriptor named "section.key", or nullptr.
const FieldDesc* find_field(std::string_view name);

// A field's value as a number (INT, FLOAT, BOOL fields).
double numeric_value(const FieldDesc& f, const Config& c);

// The value as it is written in TOML: 8, 0.003, true, "sync".
std::string format_value(const FieldValue& v);

// "the closest field name", for "did you mean" hints; empty when nothing is close.
std::string closest_field(std::string_view name);

// "an integer", "a float", "true or false", "a string", "one of \"sync\", \"diloco\"".
std::string type_description(const FieldDesc& f);

}  // namespace px::cfg
