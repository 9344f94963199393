// RAII helpers over the HDF5 C API (see h5.hpp).
#include "io/h5.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <numeric>

namespace px::h5 {
namespace {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// A link-creation property list that creates missing parent groups.
Plist lcpl_with_parents() {
  Plist p(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(p, 1);
  return p;
}

hsize_t product(const std::vector<hsize_t>& v) {
  return std::accumulate(v.begin(), v.end(), hsize_t(1), std::multiplies<>());
}

std::vector<hsize_t> dims_of(hid_t dset, const std::string& what) {
  Dataspace s(H5Dget_space(dset));
  int rank = s.valid() ? H5Sget_simple_extent_ndims(s) : -1;
  if (rank < 0) throw Error(fmt::format("{}: cannot read its shape", what));
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(s, dims.data(), nullptr);
  return dims;
}

bool same_type(hid_t a, hid_t b) {
  return H5Tget_class(a) == H5Tget_class(b) && H5Tget_size(a) == H5Tget_size(b) &&
         (H5Tget_class(a) != H5T_INTEGER || H5Tget_sign(a) == H5Tget_sign(b));
}

Attribute open_attr(hid_t obj, const std::string& name) {
  if (!has_attr(obj, name)) throw Error(fmt::format("{}: no attribute '{}'", describe(obj), name));
  Attribute a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  if (!a.valid()) throw Error(fmt::format("{}: cannot open attribute '{}'", describe(obj), name));
  return a;
}

void write_scalar_attr(hid_t obj, const std::string& name, hid_t type, const void* value) {
  if (has_attr(obj, name)) H5Adelete(obj, name.c_str());
  Dataspace s(H5Screate(H5S_SCALAR));
  Attribute a(H5Acreate2(obj, name.c_str(), type, s, H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid() || H5Awrite(a, type, value) < 0)
    throw Error(fmt::format("{}: cannot write attribute '{}'", describe(obj), name));
}

}  // namespace

void silence_errors() {
  static bool done = [] { return H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0; }();
  (void)done;
}

File create_file(const std::string& path) {
  silence_errors();
  Plist fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);  // dense (large) attributes
  // Parallel HDF5 goes here: H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) and collective writes.
  File f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
  if (!f.valid()) throw Error(fmt::format("{}: cannot create HDF5 file", path));
  return f;
}

File open_file(const std::string& path, bool writable) {
  silence_errors();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(fmt::format("{}: no such file", path));
  Plist fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
  File f(H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl));
  if (!f.valid())
    throw Error(fmt::format("{}: cannot open: not an HDF5 file, or truncated or corrupted", path));
  return f;
}

void write_file_via_temp(const std::string& path, const std::function<void(hid_t file)>& fill) {
  const std::string tmp = path + ".tmp";
  try {
    File f = create_file(tmp);
    fill(f);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  std::filesystem::rename(tmp, path);
}

bool is_hdf5(const std::string& path) {
  silence_errors();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
#if H5_VERSION_GE(1, 12, 0)
  return H5Fis_accessible(path.c_str(), H5P_DEFAULT) > 0;
#else
  return H5Fis_hdf5(path.c_str()) > 0;
#endif
}

std::string describe(hid_t loc, const std::string& name) {
  std::string file = "?", obj;
  ssize_t n = H5Fget_name(loc, nullptr, 0);
  if (n > 0) {
    file.assign(n + 1, '\0');
    H5Fget_name(loc, file.data(), n + 1);
    file.resize(n);
  }
  n = H5Iget_name(loc, nullptr, 0);
  if (n > 0) {
    obj.assign(n + 1, '\0');
    H5Iget_name(loc, obj.data(), n + 1);
    obj.resize(n);
  }
  if (!name.empty()) obj = (obj.empty() || obj == "/") ? "/" + name : obj + "/" + name;
  return file + ":" + (obj.empty() ? "/" : obj);
}

bool exists(hid_t loc, const std::string& path) {
  std::string prefix;
  for (const auto& part : split_path(path)) {
    prefix += (prefix.empty() ? "" : "/") + part;
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return !prefix.empty();
}

Group ensure_group(hid_t loc, const std::string& path) {
  Group g(exists(loc, path) ? H5Gopen2(loc, path.c_str(), H5P_DEFAULT)
                            : H5Gcreate2(loc, path.c_str(), lcpl_with_parents(), H5P_DEFAULT, H5P_DEFAULT));
  if (!g.valid()) throw Error(fmt::format("{}: cannot open or create group", describe(loc, path)));
  return g;
}

Dataset open_dataset(hid_t loc, const std::string& path) {
  if (!exists(loc, path)) throw Error(fmt::format("{}: no such dataset", describe(loc, path)));
  Dataset d(H5Dopen2(loc, path.c_str(), H5P_DEFAULT));
  if (!d.valid()) throw Error(fmt::format("{}: cannot open dataset (corrupted file?)", describe(loc, path)));
  return d;
}

std::vector<std::string> list_datasets(hid_t loc) {
  std::vector<std::string> out;
  auto visit = [](hid_t g, const char* name, const H5L_info_t*, void* data) -> herr_t {
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return -1;
    if (H5Iget_type(o) == H5I_DATASET) static_cast<std::vector<std::string>*>(data)->push_back(name);
    H5Oclose(o);
    return 0;
  };
  if (H5Lvisit(loc, H5_INDEX_NAME, H5_ITER_INC, visit, &out) < 0)
    throw Error(fmt::format("{}: cannot list its contents (corrupted file?)", describe(loc)));
  std::sort(out.begin(), out.end());
  return out;
}

template <> hid_t native_type<float>() { return H5T_NATIVE_FLOAT; }
template <> hid_t native_type<double>() { return H5T_NATIVE_DOUBLE; }
template <> hid_t native_type<int32_t>() { return H5T_NATIVE_INT32; }
template <> hid_t native_type<int64_t>() { return H5T_NATIVE_INT64; }
template <> hid_t native_type<uint8_t>() { return H5T_NATIVE_UINT8; }
template <> hid_t native_type<uint64_t>() { return H5T_NATIVE_UINT64; }

std::string type_name(hid_t t) {
  size_t bits = 8 * H5Tget_size(t);
  switch (H5Tget_class(t)) {
    case H5T_FLOAT: return fmt::format("float{}", bits);
    case H5T_INTEGER: return fmt::format("{}int{}", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits);
    case H5T_STRING: return "string";
    default: return "other";
  }
}

template <class T>
void write_array(hid_t loc, const std::string& path, const T* data, size_t count,
                 std::vector<hsize_t> shape, bool chunk_checksum) {
  if (shape.empty()) shape = {hsize_t(count)};
  if (product(shape) != count)
    throw Error(fmt::format("{}: shape holds {} elements, data has {}", describe(loc, path), product(shape), count));
  if (exists(loc, path)) throw Error(fmt::format("{}: dataset already exists", describe(loc, path)));
  Dataspace space(H5Screate_simple(int(shape.size()), shape.data(), nullptr));
  Plist dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (chunk_checksum && count > 0) {
    // Chunks of at most ~4 MiB, split along the first dimension.
    std::vector<hsize_t> chunk = shape;
    hsize_t inner = count / shape[0];
    chunk[0] = std::clamp<hsize_t>((hsize_t(4) << 20) / (sizeof(T) * std::max<hsize_t>(inner, 1)), 1, shape[0]);
    H5Pset_chunk(dcpl, int(chunk.size()), chunk.data());
    H5Pset_fletcher32(dcpl);
  }
  Dataset d(H5Dcreate2(loc, path.c_str(), native_type<T>(), space, lcpl_with_parents(), dcpl, H5P_DEFAULT));
  if (!d.valid()) throw Error(fmt::format("{}: cannot create dataset", describe(loc, path)));
  if (count > 0 && H5Dwrite(d, native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw Error(fmt::format("{}: cannot write dataset", describe(loc, path)));
}

template <class T>
std::vector<T> read_array(hid_t loc, const std::string& path) {
  Dataset d = open_dataset(loc, path);
  Datatype ft(H5Dget_type(d));
  if (!same_type(ft, native_type<T>()))
    throw Error(fmt::format("{}: stored as {}, expected {}", describe(loc, path), type_name(ft),
                            type_name(native_type<T>())));
  std::vector<T> out(product(dims_of(d, describe(loc, path))));
  if (!out.empty() && H5Dread(d, native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    throw Error(fmt::format("{}: cannot read dataset (checksum mismatch: corrupted file?)", describe(loc, path)));
  return out;
}

std::vector<hsize_t> dataset_shape(hid_t loc, const std::string& path) {
  Dataset d = open_dataset(loc, path);
  return dims_of(d, describe(loc, path));
}

Datatype dataset_type(hid_t loc, const std::string& path) {
  Dataset d = open_dataset(loc, path);
  return Datatype(H5Dget_type(d));
}

#define PX_H5_INSTANTIATE(T)                                                                  \
  template void write_array<T>(hid_t, const std::string&, const T*, size_t, std::vector<hsize_t>, bool); \
  template std::vector<T> read_array<T>(hid_t, const std::string&);
PX_H5_INSTANTIATE(float)
PX_H5_INSTANTIATE(double)
PX_H5_INSTANTIATE(int32_t)
PX_H5_INSTANTIATE(int64_t)
PX_H5_INSTANTIATE(uint8_t)
PX_H5_INSTANTIATE(uint64_t)
#undef PX_H5_INSTANTIATE

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

void write_attr(hid_t obj, const std::string& name, const std::string& value) {
  Datatype t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t, std::max<size_t>(value.size(), 1));
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  H5Tset_cset(t, H5T_CSET_UTF8);
  std::string buf = value.empty() ? std::string(1, '\0') : value;
  write_scalar_attr(obj, name, t, buf.data());
}

void write_attr(hid_t obj, const std::string& name, int64_t value) {
  write_scalar_attr(obj, name, H5T_NATIVE_INT64, &value);
}

void write_attr(hid_t obj, const std::string& name, double value) {
  write_scalar_attr(obj, name, H5T_NATIVE_DOUBLE, &value);
}

std::string read_attr_string(hid_t obj, const std::string& name) {
  Attribute a = open_attr(obj, name);
  Datatype t(H5Aget_type(a));
  if (H5Tget_class(t) != H5T_STRING)
    throw Error(fmt::format("{}: attribute '{}' is {}, expected a string", describe(obj), name, type_name(t)));
  std::string out;
  if (H5Tis_variable_str(t) > 0) {
    char* p = nullptr;
    Datatype mt(H5Tcopy(H5T_C_S1));
    H5Tset_size(mt, H5T_VARIABLE);
    if (H5Aread(a, mt, &p) < 0) throw Error(fmt::format("{}: cannot read attribute '{}'", describe(obj), name));
    if (p) out = p;
    H5free_memory(p);
  } else {
    out.assign(H5Tget_size(t), '\0');
    if (H5Aread(a, t, out.data()) < 0)
      throw Error(fmt::format("{}: cannot read attribute '{}'", describe(obj), name));
    out.resize(out.find_last_not_of('\0') + 1);  // npos + 1 == 0 for an all-NUL string
  }
  return out;
}

int64_t read_attr_int(hid_t obj, const std::string& name) {
  Attribute a = open_attr(obj, name);
  Datatype t(H5Aget_type(a));
  int64_t v = 0;
  if (H5Tget_class(t) != H5T_INTEGER || H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
    throw Error(fmt::format("{}: attribute '{}' is not an integer", describe(obj), name));
  return v;
}

double read_attr_double(hid_t obj, const std::string& name) {
  Attribute a = open_attr(obj, name);
  Datatype t(H5Aget_type(a));
  double v = 0;
  if ((H5Tget_class(t) != H5T_FLOAT && H5Tget_class(t) != H5T_INTEGER) || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0)
    throw Error(fmt::format("{}: attribute '{}' is not a number", describe(obj), name));
  return v;
}

Dataset open_rows(hid_t loc, const std::string& path, hid_t type, const std::vector<hsize_t>& row_shape) {
  if (exists(loc, path)) {
    Dataset d = open_dataset(loc, path);
    auto dims = dims_of(d, describe(loc, path));
    std::vector<hsize_t> have(dims.begin() + std::min<size_t>(1, dims.size()), dims.end());
    if (dims.empty() || have != row_shape)
      throw Error(fmt::format("{}: rows have shape [{}], expected [{}]", describe(loc, path),
                              fmt::join(have, ", "), fmt::join(row_shape, ", ")));
    return d;
  }
  std::vector<hsize_t> dims{0}, maxdims{H5S_UNLIMITED}, chunk{0};
  dims.insert(dims.end(), row_shape.begin(), row_shape.end());
  maxdims.insert(maxdims.end(), row_shape.begin(), row_shape.end());
  chunk.insert(chunk.end(), row_shape.begin(), row_shape.end());
  // ~64 KiB chunks: many rows per chunk for scalars, at least one row for wide rows.
  chunk[0] = std::max<hsize_t>(1, (hsize_t(64) << 10) / (H5Tget_size(type) * std::max<hsize_t>(1, product(row_shape))));
  Dataspace space(H5Screate_simple(int(dims.size()), dims.data(), maxdims.data()));
  Plist dcpl(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(dcpl, int(chunk.size()), chunk.data());
  Dataset d(H5Dcreate2(loc, path.c_str(), type, space, lcpl_with_parents(), dcpl, H5P_DEFAULT));
  if (!d.valid()) throw Error(fmt::format("{}: cannot create row dataset", describe(loc, path)));
  return d;
}

hsize_t row_count(hid_t dset) {
  auto dims = dims_of(dset, describe(dset));
  return dims.empty() ? 0 : dims[0];
}

void set_row_count(hid_t dset, hsize_t rows) {
  auto dims = dims_of(dset, describe(dset));
  dims[0] = rows;
  if (H5Dset_extent(dset, dims.data()) < 0)
    throw Error(fmt::format("{}: cannot resize to {} rows", describe(dset), rows));
}

void append_row(hid_t dset, hid_t mem_type, const void* data) {
  auto dims = dims_of(dset, describe(dset));
  const hsize_t n = dims[0];
  dims[0] = n + 1;
  if (H5Dset_extent(dset, dims.data()) < 0) throw Error(fmt::format("{}: cannot extend", describe(dset)));
  std::vector<hsize_t> start(dims.size(), 0), count = dims;
  start[0] = n;
  count[0] = 1;
  Dataspace fs(H5Dget_space(dset));
  H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  Dataspace ms(H5Screate_simple(int(count.size()), count.data(), nullptr));
  if (H5Dwrite(dset, mem_type, ms, fs, H5P_DEFAULT, data) < 0)
    throw Error(fmt::format("{}: cannot append a row", describe(dset)));
}

}  // namespace px::h5
