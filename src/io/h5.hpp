#pragma once
// Small RAII layer over the HDF5 C API: handles that close themselves, nested groups, whole
// N-D arrays, attributes, and row-extendable datasets. Every failure throws h5::Error naming
// the file and the object; HDF5's own error-stack printing is switched off.
#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace px::h5 {

// An HDF5 call failed; the message names the file and object ("run/metrics.h5:/train/loss").
struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A move-only owner of one hid_t, closed with `Close` (H5Fclose, H5Gclose, ...).
template <herr_t (*Close)(hid_t)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) reset(std::exchange(o.id_, H5I_INVALID_HID));
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t id() const { return id_; }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset(hid_t id = H5I_INVALID_HID) {
    if (id_ >= 0) Close(id_);
    id_ = id;
  }
  // Closes now; returns what Close returned (0 when nothing was open).
  herr_t close() {
    const herr_t rc = id_ >= 0 ? Close(id_) : 0;
    id_ = H5I_INVALID_HID;
    return rc;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using File = Handle<H5Fclose>;
using Group = Handle<H5Gclose>;
using Dataset = Handle<H5Dclose>;
using Dataspace = Handle<H5Sclose>;
using Attribute = Handle<H5Aclose>;
using Plist = Handle<H5Pclose>;
using Datatype = Handle<H5Tclose>;

// Switches off HDF5's automatic error-stack printing (idempotent; the open/create calls below
// do it themselves).
void silence_errors();

// Creates (truncates) a file for writing. Single process (sec2 driver); the parallel HDF5
// (MPI-IO) variant will take a communicator and set H5Pset_fapl_mpio here.
File create_file(const std::string& path);
// Opens an existing file, read-only or read-write.
File open_file(const std::string& path, bool writable);
// Writes a new file through a temporary name: creates `path`.tmp (create_file), calls
// fill(file), closes it and renames it onto `path` (atomic on one file system). When the create
// or `fill` throws, the temporary file is removed and the exception rethrown.
void write_file_via_temp(const std::string& path, const std::function<void(hid_t file)>& fill);
// True when `path` exists and HDF5 recognises it as an HDF5 file (signature check only).
bool is_hdf5(const std::string& path);

// "file.h5:/group/name" for messages; `name` relative to `loc`.
std::string describe(hid_t loc, const std::string& name = "");

// True when every component of "a/b/c" exists below `loc`.
bool exists(hid_t loc, const std::string& path);
// Opens the group at `path`, creating it and any missing parents.
Group ensure_group(hid_t loc, const std::string& path);
// Opens the existing dataset at `path` (for reads the helpers below do not cover, e.g. a
// hyperslab); throws Error when it is missing or cannot be opened.
Dataset open_dataset(hid_t loc, const std::string& path);
// Every dataset below `loc`, as paths relative to it ("params/backbone"), sorted.
std::vector<std::string> list_datasets(hid_t loc);

// The HDF5 native type of T (float, double, int32_t, int64_t, uint8_t, uint64_t).
template <class T> hid_t native_type();
// "float32", "int64", ... for messages.
std::string type_name(hid_t type);

// Writes a whole array as a new dataset at `path` (parent groups created). `shape` empty
// means 1-D of `count` elements. `chunk_checksum` stores it chunked with a Fletcher32
// checksum so that a corrupted file is detected on read.
template <class T>
void write_array(hid_t loc, const std::string& path, const T* data, size_t count,
                 std::vector<hsize_t> shape = {}, bool chunk_checksum = false);
// Reads a whole dataset; its element type must match T exactly (class and size).
template <class T>
std::vector<T> read_array(hid_t loc, const std::string& path);
// The dataset's dimensions.
std::vector<hsize_t> dataset_shape(hid_t loc, const std::string& path);
// The dataset's stored element type (caller closes via the returned handle).
Datatype dataset_type(hid_t loc, const std::string& path);

// Attributes on the object `obj` (a file, group or dataset).
bool has_attr(hid_t obj, const std::string& name);
void write_attr(hid_t obj, const std::string& name, const std::string& value);
void write_attr(hid_t obj, const std::string& name, int64_t value);
void write_attr(hid_t obj, const std::string& name, double value);
std::string read_attr_string(hid_t obj, const std::string& name);  // fixed or variable length
int64_t read_attr_int(hid_t obj, const std::string& name);
double read_attr_double(hid_t obj, const std::string& name);

// ---- row-extendable datasets: dims [rows, row_shape...], rows unlimited, chunked.
// Opens the dataset at `path`, creating it (with `type`, zero rows) when missing. When it
// exists, its row shape must equal `row_shape`.
Dataset open_rows(hid_t loc, const std::string& path, hid_t type, const std::vector<hsize_t>& row_shape);
// Appends one row (`data` holds product(row_shape) elements of memory type `mem_type`).
void append_row(hid_t dset, hid_t mem_type, const void* data);
// The number of rows.
hsize_t row_count(hid_t dset);
// Shrinks (or grows) the dataset to `rows` rows.
void set_row_count(hid_t dset, hsize_t rows);

}  // namespace px::h5
