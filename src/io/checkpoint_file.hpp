#pragma once
// Checkpoint files (DESIGN §8): one HDF5 file per checkpoint, RUNDIR/checkpoints/step_XXXXXXXX.h5,
// written to a temporary name and renamed when complete, so a file under its final name is
// always whole. Arrays are stored chunked with a Fletcher32 checksum: corruption is detected
// on read. Single-process writing (rank 0) for now.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "io/h5.hpp"  // defines: h5::File, hsize_t

namespace px {

// Collects named arrays and attributes, then writes them all in one commit().
class CheckpointWriter {
 public:
  // Copies `data` (so the caller may reuse its buffers before commit). `name` may contain
  // groups ("params/backbone", "optim/m", "rng/state", "data/cursor"). `shape` empty = 1-D.
  void add(const std::string& name, std::span<const float> data, std::vector<hsize_t> shape = {});
  void add(const std::string& name, std::span<const double> data, std::vector<hsize_t> shape = {});
  void add(const std::string& name, std::span<const int32_t> data, std::vector<hsize_t> shape = {});
  void add(const std::string& name, std::span<const int64_t> data, std::vector<hsize_t> shape = {});
  void add(const std::string& name, std::span<const uint64_t> data, std::vector<hsize_t> shape = {});

  // File-level attributes ("config" = the resolved TOML, "step").
  void set_attr(const std::string& name, const std::string& value);
  void set_attr(const std::string& name, int64_t value);

  // Writes everything to `path`.tmp, then renames it to `path` (creating the parent folder).
  // An interrupted commit leaves at most the .tmp file. Throws h5::Error / UserError on failure.
  void commit(const std::string& path) const;

 private:
  using Array = std::variant<std::vector<float>, std::vector<double>, std::vector<int32_t>,
                             std::vector<int64_t>, std::vector<uint64_t>>;
  struct Entry {
    std::string name;
    Array data;
    std::vector<hsize_t> shape;
  };
  template <class T> void add_impl(const std::string& name, std::span<const T> data, std::vector<hsize_t> shape);

  std::vector<Entry> arrays_;
  std::vector<std::pair<std::string, std::variant<std::string, int64_t>>> attrs_;
};

// Reads a checkpoint. Every problem (missing file, not HDF5, truncated or corrupted file,
// missing dataset, wrong element count or type) throws UserError naming the file.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path);

  bool has(const std::string& name) const;
  std::vector<std::string> names() const;  // every dataset, sorted
  std::vector<hsize_t> shape(const std::string& name) const;

  // Reads dataset `name`, which must hold exactly `expected_count` elements of type T
  // (float, double, int32_t, int64_t, uint64_t).
  template <class T> std::vector<T> read(const std::string& name, size_t expected_count) const;
  // Reads dataset `name` into `out` (its size is the expected count).
  template <class T> void read_into(const std::string& name, std::span<T> out) const;

  bool has_attr(const std::string& name) const;
  std::string attr_string(const std::string& name) const;
  int64_t attr_int(const std::string& name) const;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  h5::File file_;
};

// "DIR/step_00001000.h5".
std::string checkpoint_path(const std::string& dir, int64_t step);

// The newest checkpoint in `dir` (highest step_XXXXXXXX.h5) that opens cleanly; .tmp files are
// ignored, corrupt files skipped with a warning. nullopt when there is none.
std::optional<std::string> newest_checkpoint(const std::string& dir);

// The complete step_XXXXXXXX.h5 files of `dir` (not .tmp), newest first, as (step, path).
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& dir);

// Deletes all but the `keep` newest step_XXXXXXXX.h5 files in `dir` (keep = 0: delete none),
// and any leftover step_XXXXXXXX.h5.tmp files of interrupted commits.
void prune_checkpoints(const std::string& dir, int keep);

}  // namespace px
