// Checkpoint files: CheckpointWriter (tmp + rename), CheckpointReader, newest / prune.
#include "io/checkpoint_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "util/errors.hpp"  // defines: UserError

namespace px {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormatAttr = "parallax_checkpoint";  // format version, written last
constexpr int64_t kFormatVersion = 1;

// fsync a file or folder so that a rename after it survives a crash.
void sync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// step_XXXXXXXX.h5 files of `dir` as (step, path), newest first.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir, bool tmp) {
  static const std::regex re(R"(step_(\d{8,})\.h5)");
  static const std::regex re_tmp(R"(step_(\d{8,})\.h5\.tmp)");
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_regular_file(ec) && std::regex_match(name, m, tmp ? re_tmp : re))
      out.emplace_back(std::stoll(m[1].str()), e.path().string());
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.first > b.first; });
  return out;
}

// A UserError for an HDF5 failure in checkpoint `path`, naming the file once.
UserError as_user_error(const std::string& path, const h5::Error& e) {
  const std::string what = e.what();
  if (what.find(path) != std::string::npos) return UserError("checkpoint " + what);
  return UserError(fmt::format("checkpoint {}: {}", path, what));
}

}  // namespace

// ---- CheckpointWriter

template <class T>
void CheckpointWriter::add_impl(const std::string& name, std::span<const T> data, std::vector<hsize_t> shape) {
  for (const auto& e : arrays_)
    if (e.name == name) throw std::invalid_argument("checkpoint array '" + name + "' added twice");
  arrays_.push_back({name, std::vector<T>(data.begin(), data.end()), std::move(shape)});
}

void CheckpointWriter::add(const std::string& n, std::span<const float> d, std::vector<hsize_t> s) { add_impl(n, d, std::move(s)); }
void CheckpointWriter::add(const std::string& n, std::span<const double> d, std::vector<hsize_t> s) { add_impl(n, d, std::move(s)); }
void CheckpointWriter::add(const std::string& n, std::span<const int32_t> d, std::vector<hsize_t> s) { add_impl(n, d, std::move(s)); }
void CheckpointWriter::add(const std::string& n, std::span<const int64_t> d, std::vector<hsize_t> s) { add_impl(n, d, std::move(s)); }
void CheckpointWriter::add(const std::string& n, std::span<const uint64_t> d, std::vector<hsize_t> s) { add_impl(n, d, std::move(s)); }

void CheckpointWriter::set_attr(const std::string& name, const std::string& value) { attrs_.emplace_back(name, value); }
void CheckpointWriter::set_attr(const std::string& name, int64_t value) { attrs_.emplace_back(name, value); }

void CheckpointWriter::commit(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw UserError(fmt::format("cannot create checkpoint folder '{}': {}", parent.string(), ec.message()));
  {
    // Single process (rank 0). Parallel HDF5 comes in here: every rank opens `tmp` with an
    // MPI-IO file-access list (h5::create_file(path, comm)) and writes its own slab of each
    // array collectively; rank 0 then renames after a barrier.
    h5::File f = h5::create_file(tmp);
    for (const auto& e : arrays_)
      std::visit([&](const auto& v) { h5::write_array(f, e.name, v.data(), v.size(), e.shape, true); }, e.data);
    for (const auto& [name, value] : attrs_)
      std::visit([&, &name = name](const auto& v) { h5::write_attr(f, name, v); }, value);
    h5::write_attr(f, kFormatAttr, kFormatVersion);
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) throw h5::Error(fmt::format("{}: flush failed", tmp));
  }  // closed here
  sync_path(tmp, false);
  fs::rename(tmp, path, ec);
  if (ec) throw UserError(fmt::format("cannot rename '{}' to '{}': {}", tmp, path, ec.message()));
  sync_path(parent.empty() ? "." : parent.string(), true);
}

// ---- CheckpointReader

CheckpointReader::CheckpointReader(const std::string& path) : path_(path) {
  try {
    file_ = h5::open_file(path, false);
    if (!h5::has_attr(file_, kFormatAttr)) throw h5::Error("not a Parallax checkpoint (no format attribute)");
    const int64_t v = h5::read_attr_int(file_, kFormatAttr);
    if (v != kFormatVersion)
      throw h5::Error(fmt::format("checkpoint format version {}, this build reads version {}", v, kFormatVersion));
    h5::list_datasets(file_);  // walks the object headers: catches many corruptions early
  } catch (const h5::Error& e) {
    throw as_user_error(path, e);
  }
}

bool CheckpointReader::has(const std::string& name) const { return h5::exists(file_, name); }

std::vector<std::string> CheckpointReader::names() const {
  try {
    return h5::list_datasets(file_);
  } catch (const h5::Error& e) {
    throw as_user_error(path_, e);
  }
}

std::vector<hsize_t> CheckpointReader::shape(const std::string& name) const {
  try {
    return h5::dataset_shape(file_, name);
  } catch (const h5::Error& e) {
    throw as_user_error(path_, e);
  }
}

template <class T>
std::vector<T> CheckpointReader::read(const std::string& name, size_t expected_count) const {
  if (!has(name)) throw UserError(fmt::format("checkpoint {}: no dataset '{}'", path_, name));
  hsize_t found = 1;
  for (hsize_t d : shape(name)) found *= d;
  if (found != expected_count)
    throw UserError(fmt::format("checkpoint {}: dataset '{}' has {} elements, expected {} "
                                "(was it written with another model config?)",
                                path_, name, found, expected_count));
  try {
    return h5::read_array<T>(file_, name);
  } catch (const h5::Error& e) {
    throw as_user_error(path_, e);
  }
}

template <class T>
void CheckpointReader::read_into(const std::string& name, std::span<T> out) const {
  auto v = read<T>(name, out.size());
  std::copy(v.begin(), v.end(), out.begin());
}

template std::vector<float> CheckpointReader::read<float>(const std::string&, size_t) const;
template std::vector<double> CheckpointReader::read<double>(const std::string&, size_t) const;
template std::vector<int32_t> CheckpointReader::read<int32_t>(const std::string&, size_t) const;
template std::vector<int64_t> CheckpointReader::read<int64_t>(const std::string&, size_t) const;
template std::vector<uint64_t> CheckpointReader::read<uint64_t>(const std::string&, size_t) const;
template void CheckpointReader::read_into<float>(const std::string&, std::span<float>) const;
template void CheckpointReader::read_into<double>(const std::string&, std::span<double>) const;
template void CheckpointReader::read_into<int32_t>(const std::string&, std::span<int32_t>) const;
template void CheckpointReader::read_into<int64_t>(const std::string&, std::span<int64_t>) const;
template void CheckpointReader::read_into<uint64_t>(const std::string&, std::span<uint64_t>) const;

bool CheckpointReader::has_attr(const std::string& name) const { return h5::has_attr(file_, name); }

std::string CheckpointReader::attr_string(const std::string& name) const {
  try {
    return h5::read_attr_string(file_, name);
  } catch (const h5::Error& e) {
    throw as_user_error(path_, e);
  }
}

int64_t CheckpointReader::attr_int(const std::string& name) const {
  try {
    return h5::read_attr_int(file_, name);
  } catch (const h5::Error& e) {
    throw as_user_error(path_, e);
  }
}

// ---- finding and pruning

std::string checkpoint_path(const std::string& dir, int64_t step) {
  return (fs::path(dir) / fmt::format("step_{:08d}.h5", step)).string();
}

std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& dir) {
  return list_checkpoints(dir, false);
}

std::optional<std::string> newest_checkpoint(const std::string& dir) {
  for (const auto& [step, path] : list_checkpoints(dir, false)) {
    try {
      CheckpointReader r(path);
      return path;
    } catch (const UserError& e) {
      spdlog::warn("skipping unreadable {}", e.what());
    }
  }
  return std::nullopt;
}

void prune_checkpoints(const std::string& dir, int keep) {
  std::error_code ec;
  for (const auto& [step, path] : list_checkpoints(dir, true)) fs::remove(path, ec);
  if (keep <= 0) return;
  auto all = list_checkpoints(dir, false);
  for (size_t i = static_cast<size_t>(keep); i < all.size(); ++i) {
    if (!fs::remove(all[i].second, ec) && ec)
      spdlog::warn("cannot delete old checkpoint {}: {}", all[i].second, ec.message());
  }
}

}  // namespace px
