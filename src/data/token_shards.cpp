// Token shard files (write and partial read) and the window loader.
#include "data/token_shards.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "io/h5.hpp"        // defines: h5::File, h5::Dataset, attributes, write_file_via_temp
#include "util/errors.hpp"  // defines: UserError

namespace px {

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens,
                       int vocab_size) {
  const hsize_t n = tokens.size();
  try {
    h5::write_file_via_temp(path, [&](hid_t file) {
      h5::Dataspace space(H5Screate_simple(1, &n, nullptr));
      h5::Plist dcpl(H5Pcreate(H5P_DATASET_CREATE));
      if (n > 0) {
        const hsize_t chunk = std::min<hsize_t>(n, 1 << 18);
        H5Pset_chunk(dcpl, 1, &chunk);
        H5Pset_deflate(dcpl, 4);
      }
      h5::Dataset dset(
          H5Dcreate2(file, "tokens", H5T_STD_I32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
      if (!dset.valid() || (n > 0 && H5Dwrite(dset, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL,
                                              H5P_DEFAULT, tokens.data()) < 0)) {
        throw h5::Error(h5::describe(file, "tokens") + ": cannot write dataset");
      }
      h5::write_attr(file, "vocab_size", static_cast<int64_t>(vocab_size));
      h5::write_attr(file, "n_tokens", static_cast<int64_t>(n));
    });
  } catch (const h5::Error&) {
    throw UserError(fmt::format("token shard '{}': cannot be written", path));
  }
}

int64_t shard_token_count(const std::string& dir, const std::string& split) {
  const std::string path = (std::filesystem::path(dir) / (split + ".h5")).string();
  if (!std::filesystem::is_regular_file(path)) return -1;
  try {
    const h5::File file = h5::open_file(path, /*writable=*/false);
    return h5::has_attr(file, "n_tokens") ? h5::read_attr_int(file, "n_tokens") : -1;
  } catch (const h5::Error&) {
    return -1;
  }
}

TokenSplit::TokenSplit(const std::string& dir, const std::string& split, int part, int parts) {
  if (parts < 1 || part < 0 || part >= parts) {
    throw std::invalid_argument(fmt::format("TokenSplit: part {} of {} is invalid", part, parts));
  }
  path_ = (std::filesystem::path(dir) / (split + ".h5")).string();
  const std::string hint = "run `parallax data prepare --input ... --out DIR` first";
  if (!std::filesystem::is_directory(dir)) {
    throw UserError(fmt::format("data dir '{}' does not exist ({})", dir, hint));
  }
  if (!std::filesystem::is_regular_file(path_)) {
    throw UserError(fmt::format("token shard '{}' does not exist ({})", path_, hint));
  }
  h5::File file;
  try {
    file = h5::open_file(path_, /*writable=*/false);
  } catch (const h5::Error&) {
    throw UserError(fmt::format("token shard '{}' is not a readable HDF5 file ({})", path_, hint));
  }
  bool ok = false;
  h5::Dataset dset;
  try {
    dset = h5::open_dataset(file, "tokens");
  } catch (const h5::Error&) {
  }
  h5::Dataspace space(dset.valid() ? H5Dget_space(dset) : H5I_INVALID_HID);
  hsize_t n = 0;
  if (space.valid() && H5Sget_simple_extent_ndims(space) == 1 &&
      H5Sget_simple_extent_dims(space, &n, nullptr) == 1) {
    total_ = static_cast<int64_t>(n);
    offset_ = total_ * part / parts;
    const int64_t end = total_ * (part + 1) / parts;
    const hsize_t start = offset_, count = end - offset_;
    tokens_.resize(count);
    if (count == 0) {
      ok = true;
    } else {
      h5::Dataspace mem(H5Screate_simple(1, &count, nullptr));
      ok = H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, nullptr, &count, nullptr) >= 0 &&
           H5Dread(dset, H5T_NATIVE_INT32, mem, space, H5P_DEFAULT, tokens_.data()) >= 0;
    }
  }
  if (!ok) {
    throw UserError(fmt::format("token shard '{}' has no readable 1-D dataset /tokens ({})",
                                path_, hint));
  }
  int64_t vocab = 0;
  try {
    vocab = h5::read_attr_int(file, "vocab_size");
  } catch (const h5::Error&) {
  }
  if (vocab < 256) {
    throw UserError(fmt::format("token shard '{}' lacks a valid vocab_size attribute ({})", path_,
                                hint));
  }
  vocab_size_ = static_cast<int>(vocab);
}

TokenLoader::TokenLoader(const TokenSplit& split, int seq_len) : split_(split), seq_len_(seq_len) {
  if (seq_len < 1 || split.size() < static_cast<int64_t>(seq_len) + 1) {
    throw UserError(fmt::format(
        "token shard '{}': this part holds {} tokens, too few for seq_len {} (needs at least "
        "seq_len + 1 = {}); use a smaller seq_len, fewer data-parallel parts, or more data",
        split.path(), split.size(), seq_len, static_cast<int64_t>(seq_len) + 1));
  }
}

int64_t TokenLoader::starts(int T) const {
  if (T < 1 || T > seq_len_) {
    throw std::invalid_argument(
        fmt::format("TokenLoader: window length {} outside [1, {}]", T, seq_len_));
  }
  return split_.size() - T;
}

void TokenLoader::window(int64_t start, int T, int32_t* inputs, int32_t* targets) const {
  const int64_t w = starts(T);
  const int64_t s = ((start % w) + w) % w;
  const int32_t* t = split_.tokens().data() + s;
  std::copy(t, t + T, inputs);
  std::copy(t + 1, t + T + 1, targets);
}

void TokenLoader::next_batch(int B, int T, int32_t* inputs, int32_t* targets) {
  for (int b = 0; b < B; ++b) {
    window(cursor_ + static_cast<int64_t>(b) * T, T, inputs + static_cast<int64_t>(b) * T,
           targets + static_cast<int64_t>(b) * T);
  }
  cursor_ = (cursor_ + static_cast<int64_t>(B) * T) % starts(T);
}

void TokenLoader::eval_batch(int64_t index, int B, int T, int32_t* inputs,
                             int32_t* targets) const {
  for (int b = 0; b < B; ++b) {
    window((index * B + b) * static_cast<int64_t>(T), T, inputs + static_cast<int64_t>(b) * T,
           targets + static_cast<int64_t>(b) * T);
  }
}

int64_t TokenLoader::batches_per_epoch(int B, int T) const {
  return std::max<int64_t>(1, starts(T) / (static_cast<int64_t>(B) * T));
}

void TokenLoader::set_cursor(int64_t cursor) {
  if (cursor < 0 || cursor >= split_.size()) {
    throw UserError(fmt::format(
        "data position {} is outside [0, {}) for token shard '{}' (checkpoint from other data?)",
        cursor, split_.size(), split_.path()));
  }
  cursor_ = cursor;
}

}  // namespace px
