// MetricsWriter: metrics.h5 (row-extendable datasets) + metrics.jsonl.
#include "io/metrics_writer.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>

#include "util/errors.hpp"  // defines: UserError

namespace px {
namespace fs = std::filesystem;

namespace {

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
    else out += c;
  }
  return out;
}

// The value of "step" in a JSON line, or false when it has none.
bool json_step(const std::string& line, double* step) {
  auto pos = line.find("\"step\"");
  if (pos == std::string::npos) return false;
  pos = line.find(':', pos);
  if (pos == std::string::npos) return false;
  char* end = nullptr;
  *step = std::strtod(line.c_str() + pos + 1, &end);
  return end != line.c_str() + pos + 1;
}

// A step dataset's values as doubles (stored as int64 or float64).
std::vector<double> read_steps(hid_t file, const std::string& path) {
  h5::Datatype t = h5::dataset_type(file, path);
  if (H5Tget_class(t) == H5T_FLOAT) return h5::read_array<double>(file, path);
  auto v = h5::read_array<int64_t>(file, path);
  return {v.begin(), v.end()};
}

}  // namespace

MetricsWriter::MetricsWriter(const std::string& run_dir) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) throw UserError(fmt::format("cannot create run folder '{}': {}", run_dir, ec.message()));
  h5_path_ = (fs::path(run_dir) / "metrics.h5").string();
  jsonl_path_ = (fs::path(run_dir) / "metrics.jsonl").string();
  try {
    file_ = fs::exists(h5_path_) ? h5::open_file(h5_path_, true) : h5::create_file(h5_path_);
  } catch (const h5::Error& e) {
    throw UserError(fmt::format("metrics file {}: {}", h5_path_, e.what()));
  }
  jsonl_.open(jsonl_path_, std::ios::app);
  if (!jsonl_) throw UserError(fmt::format("cannot open '{}' for appending", jsonl_path_));
}

MetricsWriter::~MetricsWriter() {
  try {
    flush();
  } catch (...) {
  }
}

void MetricsWriter::append_raw(const std::string& path, hid_t type, const void* data, size_t n,
                               const std::vector<hsize_t>& row_shape) {
  const hsize_t want = std::accumulate(row_shape.begin(), row_shape.end(), hsize_t(1), std::multiplies<>());
  if (want != n)
    throw h5::Error(fmt::format("{}:{}: row has {} values, row shape [{}] holds {}", h5_path_, path, n,
                                fmt::join(row_shape, ", "), want));
  h5::Dataset d = h5::open_rows(file_, path, type, row_shape);
  h5::append_row(d, type, data);
}

void MetricsWriter::append_int(const std::string& path, int64_t v) {
  append_raw(path, H5T_NATIVE_INT64, &v, 1, {});
}

void MetricsWriter::append_double(const std::string& path, double v) {
  append_raw(path, H5T_NATIVE_DOUBLE, &v, 1, {});
}

void MetricsWriter::append_row(const std::string& path, const std::vector<double>& row,
                               const std::vector<hsize_t>& row_shape) {
  append_raw(path, H5T_NATIVE_DOUBLE, row.data(), row.size(), row_shape);
}

void MetricsWriter::append_row(const std::string& path, const std::vector<int64_t>& row,
                               const std::vector<hsize_t>& row_shape) {
  append_raw(path, H5T_NATIVE_INT64, row.data(), row.size(), row_shape);
}

void MetricsWriter::log_jsonl(const std::vector<std::pair<std::string, double>>& values) {
  std::string line = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i].second;
    line += fmt::format("{}\"{}\": {}", i ? ", " : "", json_escape(values[i].first),
                        std::isfinite(v) ? fmt::format("{}", v) : "null");
  }
  jsonl_ << line << "}\n";
  flush();
}

void MetricsWriter::flush() {
  jsonl_.flush();
  if (file_.valid() && H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0)
    throw h5::Error(fmt::format("{}: flush failed", h5_path_));
}

void MetricsWriter::truncate_after_step(int64_t step) {
  // metrics.h5: rows to keep per step dataset, then cut every dataset aligned with it.
  std::map<std::string, hsize_t> keep;  // step dataset -> rows with step <= `step`
  for (const auto& path : h5::list_datasets(file_)) {
    const auto slash = path.rfind('/');
    const std::string group = slash == std::string::npos ? "" : path.substr(0, slash);
    std::string step_path = group.empty() ? "step" : group + "/step";
    if (!h5::exists(file_, step_path)) step_path = "train/step";
    if (!h5::exists(file_, step_path)) continue;  // nothing to align with
    if (!keep.count(step_path)) {
      auto steps = read_steps(file_, step_path);
      hsize_t n = 0;
      while (n < steps.size() && steps[n] <= double(step)) ++n;
      keep[step_path] = n;
    }
    h5::Dataset d(H5Dopen2(file_, path.c_str(), H5P_DEFAULT));
    if (h5::row_count(d) > keep[step_path]) h5::set_row_count(d, keep[step_path]);
  }
  // metrics.jsonl: rewrite without the later lines.
  jsonl_.close();
  {
    std::ifstream in(jsonl_path_);
    std::ofstream out(jsonl_path_ + ".tmp", std::ios::trunc);
    std::string line;
    double s = 0;
    while (std::getline(in, line))
      if (!json_step(line, &s) || s <= double(step)) out << line << "\n";
    if (!out) throw UserError(fmt::format("cannot rewrite '{}'", jsonl_path_));
  }
  fs::rename(jsonl_path_ + ".tmp", jsonl_path_);
  jsonl_.open(jsonl_path_, std::ios::app);
  flush();
}

}  // namespace px
