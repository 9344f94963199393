// tokenizer.h5: dataset /merges int32 [M,2] and root attribute vocab_size (= 256 + M).
#include <fmt/format.h>

#include <filesystem>

#include "data/bpe_tokenizer.hpp"
#include "data/h5_file.hpp"  // defines: data_h5::Handle, attributes, temporary-name writes
#include "util/errors.hpp"   // defines: UserError

namespace px {

void BpeTokenizer::save(const std::string& path) const {
  const std::string tmp = data_h5::temp_path(path);
  const hsize_t m = merges_.size();
  bool ok = false;
  {
    data_h5::Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file.valid()) {
      const hsize_t dims[2] = {m, 2};
      data_h5::Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
      data_h5::Handle dset(H5Dcreate2(file.get(), "merges", H5T_STD_I32LE, space.get(), H5P_DEFAULT,
                                 H5P_DEFAULT, H5P_DEFAULT),
                      H5Dclose);
      std::vector<int32_t> flat;
      flat.reserve(2 * m);
      for (const auto& [a, b] : merges_) {
        flat.push_back(a);
        flat.push_back(b);
      }
      ok = dset.valid() &&
           (m == 0 || H5Dwrite(dset.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                               flat.data()) >= 0) &&
           data_h5::write_attr_i64(file.get(), "vocab_size", vocab_size());
    }
  }
  if (!ok) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw UserError(fmt::format("tokenizer file '{}': cannot be written", path));
  }
  data_h5::commit_temp(path);
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw UserError(fmt::format(
        "tokenizer file '{}' does not exist (run `parallax data prepare` to create it)", path));
  }
  data_h5::Handle file = data_h5::open_read_only(path);
  if (!file.valid()) {
    throw UserError(fmt::format("tokenizer file '{}' is not a readable HDF5 file", path));
  }
  auto corrupt = [&](const std::string& why) {
    return UserError(fmt::format("tokenizer file '{}' is corrupt: {}", path, why));
  };
  std::vector<std::pair<int32_t, int32_t>> merges;
  int64_t vocab = -1;
  bool shape_ok = false, read_ok = false;
  H5E_BEGIN_TRY {
    data_h5::Handle dset(H5Dopen2(file.get(), "merges", H5P_DEFAULT), H5Dclose);
    if (dset.valid()) {
      data_h5::Handle space(H5Dget_space(dset.get()), H5Sclose);
      hsize_t dims[2] = {0, 0};
      shape_ok = H5Sget_simple_extent_ndims(space.get()) == 2 &&
                 H5Sget_simple_extent_dims(space.get(), dims, nullptr) == 2 && dims[1] == 2;
      if (shape_ok) {
        std::vector<int32_t> flat(2 * dims[0]);
        read_ok = dims[0] == 0 || H5Dread(dset.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL,
                                          H5P_DEFAULT, flat.data()) >= 0;
        for (hsize_t r = 0; r < dims[0]; ++r) merges.emplace_back(flat[2 * r], flat[2 * r + 1]);
      }
    }
  }
  H5E_END_TRY;
  if (!shape_ok) throw corrupt("no int32 dataset /merges of shape [M,2]");
  if (!read_ok) throw corrupt("dataset /merges cannot be read");
  if (!data_h5::read_attr_i64(file.get(), "vocab_size", vocab)) {
    throw corrupt("attribute vocab_size is missing");
  }
  if (vocab != 256 + static_cast<int64_t>(merges.size())) {
    throw corrupt(fmt::format("vocab_size is {} but /merges has {} rows (expected {})", vocab,
                              merges.size(), 256 + merges.size()));
  }
  return from_merges(std::move(merges), fmt::format("tokenizer file '{}'", path));
}

}  // namespace px
