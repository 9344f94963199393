#pragma once
// Small HDF5 helpers for the data module (tokenizer.h5, train.h5, val.h5): an owning handle
// that closes itself, scalar int64 attributes, and "write to a temporary name, then rename".
// Serial HDF5 only (default file access); every call here is made by one process.
#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

namespace px::data_h5 {

// Owns one HDF5 identifier (file, dataset, dataspace, attribute or property list) and
// closes it with the matching H5*close on destruction. A negative id means "none".
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      close_ = o.close_;
    }
    return *this;
  }
  ~Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// Writes a scalar int64 attribute `name` on object `obj`; returns false on failure.
inline bool write_attr_i64(hid_t obj, const char* name, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose);
  if (!attr.valid()) return false;
  return H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) >= 0;
}

// Reads a scalar integer attribute `name` of `obj` into `out`; returns false when it is
// missing or unreadable (the HDF5 error stack is not printed).
inline bool read_attr_i64(hid_t obj, const char* name, int64_t& out) {
  bool ok = false;
  H5E_BEGIN_TRY {
    if (H5Aexists(obj, name) > 0) {
      Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
      ok = attr.valid() && H5Aread(attr.get(), H5T_NATIVE_INT64, &out) >= 0;
    }
  }
  H5E_END_TRY;
  return ok;
}

// Opens an existing HDF5 file read-only without printing the HDF5 error stack; the
// returned handle is invalid when the file is missing or not HDF5.
inline Handle open_read_only(const std::string& path) {
  hid_t id = -1;
  H5E_BEGIN_TRY { id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT); }
  H5E_END_TRY;
  return Handle(id, H5Fclose);
}

// The temporary name a file is written under before being renamed into place.
inline std::string temp_path(const std::string& path) { return path + ".tmp"; }

// Renames a completed temporary file onto its final name (atomic on one file system).
inline void commit_temp(const std::string& path) {
  std::filesystem::rename(temp_path(path), path);
}

}  // namespace px::data_h5
