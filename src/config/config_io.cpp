// Config <-> TOML: load_config / parse_config, overrides, config_to_toml, save_config.
#include <fmt/format.h>
#include <toml++/toml.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config.hpp"
#include "config/config_fields.hpp"  // defines: config_fields, find_field, FieldValue
#include "util/errors.hpp"           // defines: UserError

namespace px {
namespace {

using cfg::FieldDesc;
using cfg::FieldType;
using cfg::FieldValue;

std::string where(const std::string& source, const toml::node& n) {
  const auto& src = n.source();
  if (src.begin.line == 0) return fmt::format("in {}", source);
  return fmt::format("in {} (line {})", source, src.begin.line);
}

std::string did_you_mean(const std::string& name) {
  std::string best = cfg::closest_field(name);
  return best.empty() ? "" : fmt::format("; did you mean '{}'?", best);
}

std::string toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date/time";
  }
}

// Converts a TOML node to the field's value type, or throws naming field, value and type.
FieldValue from_node(const FieldDesc& f, const toml::node& n, const std::string& source) {
  auto wrong = [&]() {
    std::ostringstream shown;
    if (n.is_table() || n.is_array()) shown << "(" << toml_type_name(n) << ")";
    else n.visit([&](auto&& v) { shown << v; });
    return UserError(fmt::format("{} = {} {}: expected {}, got {}", f.name(), shown.str(),
                                 where(source, n), cfg::type_description(f), toml_type_name(n)));
  };
  switch (f.type) {
    case FieldType::INT:
      if (auto v = n.value_exact<int64_t>()) return *v;
      throw wrong();
    case FieldType::FLOAT:
      if (n.is_integer()) return static_cast<double>(*n.value_exact<int64_t>());
      if (auto v = n.value_exact<double>()) return *v;
      throw wrong();
    case FieldType::BOOL:
      if (auto v = n.value_exact<bool>()) return *v;
      throw wrong();
    case FieldType::STRING:
    case FieldType::CHOICE:
      if (auto v = n.value_exact<std::string>()) return *v;
      throw wrong();
  }
  throw wrong();
}

// Parses an override's value text by the field's type.
FieldValue from_text(const FieldDesc& f, std::string text) {
  auto bad = [&]() {
    return UserError(fmt::format("override {}={}: expected {}", f.name(), text,
                                 cfg::type_description(f)));
  };
  const char* b = text.data();
  const char* e = text.data() + text.size();
  switch (f.type) {
    case FieldType::INT: {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(b, e, v);
      if (ec != std::errc() || p != e || text.empty()) throw bad();
      return v;
    }
    case FieldType::FLOAT: {
      double v = 0;
      auto [p, ec] = std::from_chars(b, e, v);
      if (ec != std::errc() || p != e || text.empty()) throw bad();
      return v;
    }
    case FieldType::BOOL:
      if (text == "true" || text == "1") return true;
      if (text == "false" || text == "0") return false;
      throw bad();
    case FieldType::STRING:
    case FieldType::CHOICE:
      if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') &&
          text.back() == text.front())
        text = text.substr(1, text.size() - 2);
      return text;
  }
  throw bad();
}

void apply_table(Config& c, const toml::table& root, const std::string& source) {
  const auto& sections = cfg::config_sections();
  for (const auto& [sec_key, sec_node] : root) {
    const std::string sec(sec_key.str());
    const bool known = std::find(sections.begin(), sections.end(), sec) != sections.end();
    if (!sec_node.is_table()) {
      throw UserError(fmt::format("unknown key '{}' {}: every key belongs to a section ([{}] ...){}",
                                  sec, where(source, sec_node), sections.front(), did_you_mean(sec)));
    }
    if (!known) {
      std::string hint;
      for (const auto& s : sections)
        hint += (hint.empty() ? "" : ", ") + fmt::format("[{}]", s);
      throw UserError(fmt::format("unknown section '[{}]' {}: sections are {}", sec,
                                  where(source, sec_node), hint));
    }
    for (const auto& [key, node] : *sec_node.as_table()) {
      const std::string name = sec + "." + std::string(key.str());
      const FieldDesc* f = cfg::find_field(name);
      if (!f)
        throw UserError(fmt::format("unknown key '{}' {}{}", name, where(source, node), did_you_mean(name)));
      try {
        f->set(c, from_node(*f, node, source));
      } catch (const UserError& e) {  // bad choice or integer width: add where it came from
        if (std::string(e.what()).find(source) != std::string::npos) throw;
        throw UserError(fmt::format("{}, {}", e.what(), where(source, node)));
      }
    }
  }
}

}  // namespace

bool operator==(const Config& a, const Config& b) {
  for (const auto& f : cfg::config_fields())
    if (f.get(a) != f.get(b)) return false;
  return true;
}

std::vector<std::string> config_field_names() {
  std::vector<std::string> out;
  for (const auto& f : cfg::config_fields()) out.push_back(f.name());
  return out;
}

void apply_override(Config& c, const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError(fmt::format("override '{}': expected section.key=value", text));
  auto trim = [](std::string s) {
    const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  };
  const std::string name = trim(text.substr(0, eq));
  const FieldDesc* f = cfg::find_field(name);
  if (!f)
    throw UserError(fmt::format("unknown key '{}' in override '{}'{}", name, text, did_you_mean(name)));
  f->set(c, from_text(*f, trim(text.substr(eq + 1))));
}

Config parse_config(const std::string& toml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw UserError(fmt::format("{}:{}:{}: TOML syntax error: {}", source, e.source().begin.line,
                                e.source().begin.column, e.description()));
  }
  Config c;
  apply_table(c, root, source);
  for (const auto& o : overrides) apply_override(c, o);
  validate_config(c);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw UserError(fmt::format("config file '{}' not found (or not a regular file)", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("cannot read config file '{}'", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

std::string config_to_toml(const Config& c) {
  std::string out = "# Parallax resolved config: every field, defaults included.\n";
  std::string section;
  for (const auto& f : cfg::config_fields()) {
    if (f.section != section) {
      section = f.section;
      out += fmt::format("\n[{}]\n", section);
    }
    std::string line = fmt::format("{} = {}", f.key, cfg::format_value(f.get(c)));
    out += fmt::format("{:<28} # {}\n", line, f.help);
  }
  return out;
}

void save_config(const Config& c, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw UserError(fmt::format("cannot write config file '{}'", tmp));
    out << config_to_toml(c);
    out.flush();
    if (!out) throw UserError(fmt::format("error writing config file '{}'", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw UserError(fmt::format("cannot rename '{}' to '{}': {}", tmp, path, ec.message()));
}

}  // namespace px
