// tokenizer.h5: dataset /merges int32 [M,2] and root attribute vocab_size (= 256 + M).
#include <fmt/format.h>

#include <filesystem>

#include "data/bpe_tokenizer.hpp"
#include "io/h5.hpp"        // defines: h5::File, h5::Dataset, attributes, write_file_via_temp
#include "util/errors.hpp"  // defines: UserError

namespace px {

void BpeTokenizer::save(const std::string& path) const {
  const hsize_t m = merges_.size();
  std::vector<int32_t> flat;
  flat.reserve(2 * m);
  for (const auto& [a, b] : merges_) {
    flat.push_back(a);
    flat.push_back(b);
  }
  try {
    h5::write_file_via_temp(path, [&](hid_t file) {
      const hsize_t dims[2] = {m, 2};
      h5::Dataspace space(H5Screate_simple(2, dims, nullptr));
      h5::Dataset dset(H5Dcreate2(file, "merges", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                  H5P_DEFAULT));
      if (!dset.valid() || (m > 0 && H5Dwrite(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL,
                                              H5P_DEFAULT, flat.data()) < 0)) {
        throw h5::Error(h5::describe(file, "merges") + ": cannot write dataset");
      }
      h5::write_attr(file, "vocab_size", static_cast<int64_t>(vocab_size()));
    });
  } catch (const h5::Error&) {
    throw UserError(fmt::format("tokenizer file '{}': cannot be written", path));
  }
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw UserError(fmt::format(
        "tokenizer file '{}' does not exist (run `parallax data prepare` to create it)", path));
  }
  h5::File file;
  try {
    file = h5::open_file(path, /*writable=*/false);
  } catch (const h5::Error&) {
    throw UserError(fmt::format("tokenizer file '{}' is not a readable HDF5 file", path));
  }
  auto corrupt = [&](const std::string& why) {
    return UserError(fmt::format("tokenizer file '{}' is corrupt: {}", path, why));
  };
  h5::Dataset dset;
  hsize_t dims[2] = {0, 0};
  try {
    dset = h5::open_dataset(file, "merges");
  } catch (const h5::Error&) {
  }
  h5::Dataspace space(dset.valid() ? H5Dget_space(dset) : H5I_INVALID_HID);
  if (!space.valid() || H5Sget_simple_extent_ndims(space) != 2 ||
      H5Sget_simple_extent_dims(space, dims, nullptr) != 2 || dims[1] != 2) {
    throw corrupt("no int32 dataset /merges of shape [M,2]");
  }
  std::vector<int32_t> flat(2 * dims[0]);
  if (dims[0] > 0 &&
      H5Dread(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, flat.data()) < 0) {
    throw corrupt("dataset /merges cannot be read");
  }
  std::vector<std::pair<int32_t, int32_t>> merges;
  for (hsize_t r = 0; r < dims[0]; ++r) merges.emplace_back(flat[2 * r], flat[2 * r + 1]);
  int64_t vocab = -1;
  try {
    vocab = h5::read_attr_int(file, "vocab_size");
  } catch (const h5::Error&) {
    throw corrupt("attribute vocab_size is missing");
  }
  if (vocab != 256 + static_cast<int64_t>(merges.size())) {
    throw corrupt(fmt::format("vocab_size is {} but /merges has {} rows (expected {})", vocab,
                              merges.size(), 256 + merges.size()));
  }
  return from_merges(std::move(merges), fmt::format("tokenizer file '{}'", path));
}

}  // namespace px
