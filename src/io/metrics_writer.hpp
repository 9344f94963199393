#pragma once
// The run's metrics (DESIGN §8): RUNDIR/metrics.h5 (row-extendable datasets) and
// RUNDIR/metrics.jsonl (one JSON object per log interval). Written by rank 0 only.
//
// Row alignment: every dataset's rows line up with the `step` dataset of its group
// (`/eval/loss` with `/eval/step`); datasets in a group without one (`/experts/load`,
// `/memory/peak_bytes`, `/comm/<tier>/bytes`) line up with `/train/step`.
// truncate_after_step relies on this.
#include <cstdint>
#include <fstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "io/h5.hpp"  // defines: h5::File, hsize_t

namespace px {

class MetricsWriter {
 public:
  // Opens RUNDIR/metrics.h5 for appending (creating it, and RUNDIR, when missing) and
  // RUNDIR/metrics.jsonl for appending. An existing metrics.h5 that cannot be opened
  // (corrupted) throws UserError naming it.
  explicit MetricsWriter(const std::string& run_dir);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Appends one value to the 1-D dataset at `path` ("/train/loss"), creating it on first use:
  // int64 for integral values, float64 for floating-point ones.
  template <class T>
    requires std::is_arithmetic_v<T>
  void append(const std::string& path, T value) {
    if constexpr (std::is_integral_v<T>) append_int(path, static_cast<int64_t>(value));
    else append_double(path, static_cast<double>(value));
  }

  // Appends one row of shape `row_shape` (row.size() == product) to the dataset at `path`,
  // whose dims are [rows, row_shape...]: "/experts/load" [rows, moe_layers, E],
  // "/memory/peak_bytes" [rows, world_size]. The row shape must not change between calls.
  void append_row(const std::string& path, const std::vector<double>& row, const std::vector<hsize_t>& row_shape);
  void append_row(const std::string& path, const std::vector<int64_t>& row, const std::vector<hsize_t>& row_shape);

  // Writes one line {"k": v, ...} to metrics.jsonl, then flush()es both files: call once per
  // log interval so a killed run keeps every interval it logged.
  void log_jsonl(const std::vector<std::pair<std::string, double>>& values);

  // Flushes metrics.h5 and metrics.jsonl to the operating system.
  void flush();

  // For resume: drops every row logged after `step` (by the row-alignment rule above) from
  // metrics.h5, and every line whose "step" > `step` from metrics.jsonl.
  void truncate_after_step(int64_t step);

  const std::string& h5_path() const { return h5_path_; }
  const std::string& jsonl_path() const { return jsonl_path_; }

 private:
  void append_int(const std::string& path, int64_t value);
  void append_double(const std::string& path, double value);
  void append_raw(const std::string& path, hid_t type, const void* data, size_t n,
                  const std::vector<hsize_t>& row_shape);

  std::string h5_path_, jsonl_path_;
  h5::File file_;
  std::ofstream jsonl_;
};

}  // namespace px
