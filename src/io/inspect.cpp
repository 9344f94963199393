// inspect_h5: walk an HDF5 file and describe what it holds.
#include "io/inspect.hpp"

#include <fmt/format.h>
#include <hdf5.h>

#include <algorithm>

#include "io/h5.hpp"        // defines: h5::open_file, list_datasets, dataset_shape, dataset_type
#include "util/errors.hpp"  // defines: UserError

namespace px {

namespace {

std::string shape_str(const std::vector<hsize_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Root attributes: strings shortened to one line, numbers as they are.
std::string root_attrs(hid_t file) {
  std::string out;
  const int n = (int)H5Aget_num_attrs(file);
  for (int i = 0; i < n; ++i) {
    h5::Attribute a(H5Aopen_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, H5P_DEFAULT,
                                   H5P_DEFAULT));
    if (!a.valid()) continue;
    char name[256] = {0};
    H5Aget_name(a, sizeof(name), name);
    h5::Datatype t(H5Aget_type(a));
    std::string value;
    if (H5Tget_class(t) == H5T_STRING) {
      value = h5::read_attr_string(file, name);
      const size_t lines = (size_t)std::count(value.begin(), value.end(), '\n');
      if (value.size() > 60 || lines > 0)
        value = fmt::format("<text, {} bytes, {} lines>", value.size(), lines + 1);
    } else if (H5Tget_class(t) == H5T_INTEGER) {
      value = std::to_string(h5::read_attr_int(file, name));
    } else {
      value = fmt::format("{}", h5::read_attr_double(file, name));
    }
    out += fmt::format("  @{} = {}\n", name, value);
  }
  return out;
}

}  // namespace

std::string inspect_h5(const std::string& path) {
  try {
    h5::File f = h5::open_file(path, false);
    std::string out = fmt::format("{}\n", path);
    {
      h5::Group root(H5Gopen2(f, "/", H5P_DEFAULT));
      out += root_attrs(root);
    }
    const auto names = h5::list_datasets(f);
    size_t total = 0;
    for (const std::string& n : names) {
      const auto shape = h5::dataset_shape(f, n);
      h5::Datatype t = h5::dataset_type(f, n);
      size_t count = 1;
      for (hsize_t s : shape) count *= s;
      total += count * H5Tget_size(t);
      std::string extra;
      const H5T_class_t cls = H5Tget_class(t);
      if (shape.size() == 1 && count > 0 && count <= (1u << 22) &&
          (cls == H5T_INTEGER || cls == H5T_FLOAT)) {  // numeric 1-D: first and last values
        std::vector<double> v(count);
        h5::Dataset d = h5::open_dataset(f, n);
        if (H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) >= 0)
          extra = count == 1 ? fmt::format("  = {:.6g}", v[0])
                             : fmt::format("  first {:.6g} last {:.6g}", v.front(), v.back());
      }
      out += fmt::format("  {:<44} {:<8} {}{}\n", n, h5::type_name(t), shape_str(shape), extra);
    }
    out += fmt::format("{} datasets, {:.2f} MB of data\n", names.size(), total / 1e6);
    return out;
  } catch (const h5::Error& e) {
    throw UserError(fmt::format("inspect: {}", e.what()));
  }
}

}  // namespace px
