// Token shard files (write and partial read) and the window loader.
#include "data/token_shards.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "data/h5_file.hpp"  // defines: data_h5::Handle, attributes, temporary-name writes
#include "util/errors.hpp"   // defines: UserError

namespace px {

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens,
                       int vocab_size) {
  const std::string tmp = data_h5::temp_path(path);
  const hsize_t n = tokens.size();
  bool ok = false;
  {
    data_h5::Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file.valid()) {
      data_h5::Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
      data_h5::Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
      if (n > 0) {
        const hsize_t chunk = std::min<hsize_t>(n, 1 << 18);
        H5Pset_chunk(dcpl.get(), 1, &chunk);
        H5Pset_deflate(dcpl.get(), 4);
      }
      data_h5::Handle dset(H5Dcreate2(file.get(), "tokens", H5T_STD_I32LE, space.get(), H5P_DEFAULT,
                                 dcpl.get(), H5P_DEFAULT),
                      H5Dclose);
      ok = dset.valid() &&
           (n == 0 || H5Dwrite(dset.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                               tokens.data()) >= 0) &&
           data_h5::write_attr_i64(file.get(), "vocab_size", vocab_size) &&
           data_h5::write_attr_i64(file.get(), "n_tokens", static_cast<int64_t>(n));
    }
  }
  if (!ok) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw UserError(fmt::format("token shard '{}': cannot be written", path));
  }
  data_h5::commit_temp(path);
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
  data_h5::Handle file = data_h5::open_read_only(path_);
  if (!file.valid()) {
    throw UserError(fmt::format("token shard '{}' is not a readable HDF5 file ({})", path_, hint));
  }
  bool ok = false;
  H5E_BEGIN_TRY {
    data_h5::Handle dset(H5Dopen2(file.get(), "tokens", H5P_DEFAULT), H5Dclose);
    data_h5::Handle space(dset.valid() ? H5Dget_space(dset.get()) : -1, H5Sclose);
    hsize_t n = 0;
    if (space.valid() && H5Sget_simple_extent_ndims(space.get()) == 1 &&
        H5Sget_simple_extent_dims(space.get(), &n, nullptr) == 1) {
      total_ = static_cast<int64_t>(n);
      offset_ = total_ * part / parts;
      const int64_t end = total_ * (part + 1) / parts;
      const hsize_t start = offset_, count = end - offset_;
      tokens_.resize(count);
      if (count == 0) {
        ok = true;
      } else {
        data_h5::Handle mem(H5Screate_simple(1, &count, nullptr), H5Sclose);
        ok = H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, &start, nullptr, &count,
                                 nullptr) >= 0 &&
             H5Dread(dset.get(), H5T_NATIVE_INT32, mem.get(), space.get(), H5P_DEFAULT,
                     tokens_.data()) >= 0;
      }
    }
  }
  H5E_END_TRY;
  if (!ok) {
    throw UserError(fmt::format("token shard '{}' has no readable 1-D dataset /tokens ({})",
                                path_, hint));
  }
  int64_t vocab = 0;
  if (!data_h5::read_attr_i64(file.get(), "vocab_size", vocab) || vocab < 256) {
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
