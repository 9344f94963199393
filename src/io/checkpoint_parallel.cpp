// Parallel HDF5 checkpoint writer and the per-rank reader.
#include "io/checkpoint_parallel.hpp"

#include <fmt/format.h>
#include <hdf5.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "io/checkpoint_room.hpp"  // defines: checkpoint_room_problem, reserve_checkpoint_room, write_error_reason
#include "io/h5.hpp"            // defines: h5::File, h5::ensure_group, h5::write_attr
#include "parallel/comm.hpp"    // defines: mpiCheck
#include "parallel/wait_deadline.hpp"  // defines: WaitScope
#include "util/errors.hpp"      // defines: UserError

namespace px {

namespace fs = std::filesystem;

namespace {

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

hid_t mem_type(int t) {
  return t == 0 ? H5T_NATIVE_FLOAT : t == 1 ? H5T_NATIVE_INT64 : H5T_NATIVE_INT32;
}
hid_t file_type(int t) {
  return t == 0 ? H5T_IEEE_F32LE : t == 1 ? H5T_STD_I64LE : H5T_STD_I32LE;
}
size_t type_size(int t) { return t == 1 ? 8 : 4; }

// HDF5's share of a checkpoint file, for the room check: the superblock and root group, and
// each dataset's object header, checksum attribute and group entries (measured on a 2-rank
// checkpoint: 19.5 KB over its 28 arrays and its attributes).
constexpr uint64_t kFileOverhead = 16 << 10, kDatasetOverhead = 1 << 10;

template <class T>
std::vector<uint8_t> as_bytes(std::span<const T> d) {
  std::vector<uint8_t> b(d.size_bytes());
  if (!d.empty()) std::memcpy(b.data(), d.data(), b.size());
  return b;
}

// "name\ttype\tcount\tchecksum\n" per entry.
std::string describe(const std::string& prefix, int type, size_t count, uint64_t sum) {
  return fmt::format("{}\t{}\t{}\t{}\n", prefix, type, count, sum);
}

std::vector<std::string> allgather_strings(MPI_Comm comm, const std::string& mine) {
  const WaitScope ws("MPI_Allgather(v) of the checkpoint's entries", "checkpoint", 0);
  int p = 0;
  mpiCheck(MPI_Comm_size(comm, &p));
  int n = (int)mine.size();
  std::vector<int> lens(p), displs(p);
  mpiCheck(MPI_Allgather(&n, 1, MPI_INT, lens.data(), 1, MPI_INT, comm));
  int total = 0;
  for (int i = 0; i < p; ++i) displs[i] = total, total += lens[i];
  std::string all(total, '\0');
  mpiCheck(MPI_Allgatherv(mine.data(), n, MPI_CHAR, all.data(), lens.data(), displs.data(),
                          MPI_CHAR, comm));
  std::vector<std::string> out(p);
  for (int i = 0; i < p; ++i) out[i] = all.substr(displs[i], lens[i]);
  return out;
}

std::string bcast_string(MPI_Comm comm, std::string s) {
  const WaitScope ws("MPI_Bcast of the checkpoint's metadata", "checkpoint", 0);
  int n = (int)s.size();
  mpiCheck(MPI_Bcast(&n, 1, MPI_INT, 0, comm));
  s.resize(n);
  mpiCheck(MPI_Bcast(s.data(), n, MPI_CHAR, 0, comm));
  return s;
}

// One dataset of the file, as its writing rank described it.
struct Described {
  std::string name;  // "rank_00003/params/backbone"
  int type;
  hsize_t count;
  int64_t sum;  // fnv1a of its bytes
};

// The problem of the lowest rank that has one, on every rank ("" when none has).
std::string first_problem(MPI_Comm comm, const std::string& mine) {
  const WaitScope ws("MPI_Allreduce/Bcast of the checkpoint's first problem", "checkpoint", 0);
  int size = 0, rank = 0;
  mpiCheck(MPI_Comm_size(comm, &size));
  mpiCheck(MPI_Comm_rank(comm, &rank));
  int first = mine.empty() ? size : rank;
  mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == size) return "";
  std::string msg = mine;
  int n = (int)msg.size();
  mpiCheck(MPI_Bcast(&n, 1, MPI_INT, first, comm));
  msg.resize(n);
  mpiCheck(MPI_Bcast(msg.data(), n, MPI_CHAR, first, comm));
  return msg;
}

// Every rank's "name\ttype\tcount\tchecksum\n" lines, parsed.
std::vector<std::vector<Described>> parse_descriptions(const std::vector<std::string>& all) {
  std::vector<std::vector<Described>> out(all.size());
  for (size_t r = 0; r < all.size(); ++r) {
    size_t pos = 0;
    const std::string& s = all[r];
    while (pos < s.size()) {
      const size_t end = s.find('\n', pos);
      const std::string line = s.substr(pos, end - pos);
      pos = end + 1;
      const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1), t3 = line.find('\t', t2 + 1);
      out[r].push_back({line.substr(0, t1), std::stoi(line.substr(t1 + 1, t2 - t1 - 1)),
                        (hsize_t)std::stoull(line.substr(t2 + 1, t3 - t2 - 1)),
                        (int64_t)std::stoull(line.substr(t3 + 1))});
    }
  }
  return out;
}

// About the size of the file: the arrays, the attributes and HDF5's headers.
uint64_t file_bytes(const std::vector<std::vector<Described>>& all,
                    const std::vector<std::pair<std::string, std::string>>& attrs) {
  uint64_t bytes = kFileOverhead;
  for (const auto& rank : all)
    for (const auto& d : rank) bytes += d.count * type_size(d.type) + kDatasetOverhead;
  for (const auto& [k, v] : attrs) bytes += v.size();
  return bytes;
}

}  // namespace

std::string rank_array_name(int rank, const std::string& name) {
  return fmt::format("rank_{:05d}/{}", rank, name);
}

void ParallelCheckpointWriter::add_owned(const std::string& n, int type, std::vector<uint8_t> bytes) {
  entries_.push_back({n, type, std::move(bytes), {}});
  entries_.back().bytes = std::span<const uint8_t>(entries_.back().owned);
}
void ParallelCheckpointWriter::add(const std::string& n, std::span<const float> d) { add_owned(n, 0, as_bytes(d)); }
void ParallelCheckpointWriter::add(const std::string& n, std::span<const int64_t> d) { add_owned(n, 1, as_bytes(d)); }
void ParallelCheckpointWriter::add(const std::string& n, std::span<const int32_t> d) { add_owned(n, 2, as_bytes(d)); }
void ParallelCheckpointWriter::add_borrowed(const std::string& n, std::span<const float> d) {
  entries_.push_back({n, 0, {}, {reinterpret_cast<const uint8_t*>(d.data()), d.size_bytes()}});
}

void ParallelCheckpointWriter::commit(MPI_Comm comm,
                                      const std::string& path,
                                      const std::vector<std::pair<std::string, std::string>>& attrs,
                                      int64_t step) const {
  int rank = 0, p = 0;
  mpiCheck(MPI_Comm_rank(comm, &rank));
  mpiCheck(MPI_Comm_size(comm, &p));
  std::string mine;
  for (const Entry& e : entries_)
    mine += describe(rank_array_name(rank, e.name), e.type, e.bytes.size() / type_size(e.type),
                     fnv1a(e.bytes.data(), e.bytes.size()));
  const std::vector<std::string> all = allgather_strings(comm, mine);
  const std::string tmp = path + ".tmp";
  const fs::path parent = fs::path(path).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  const auto fail = [&](const std::string& problem) {
    throw UserError(fmt::format("checkpoint {} not written (earlier checkpoints are unchanged): {}", path, problem));
  };
  // the folder and the room for the file, agreed before any file exists
  std::error_code ec;
  if (rank == 0) fs::create_directories(dir, ec);
  std::string problem = ec ? fmt::format("cannot create the folder {}: {}", dir, ec.message())
                           : checkpoint_room_problem(dir, file_bytes(parse_descriptions(all), attrs), rank == 0);
  problem = first_problem(comm, problem);
  if (!problem.empty()) fail(problem);
  // the file: every rank reaches the collective close whatever failed, then they agree
  {
    // HDF5's own collective I/O (MPI-IO) runs under one deadline for the whole file
    const WaitScope ws("the collective HDF5 write of a checkpoint", "checkpoint", p);
    problem = write(comm, tmp, all, attrs, step);
  }
  problem = first_problem(comm, problem);
  if (problem.empty() && rank == 0) {
    fs::rename(tmp, path, ec);
    if (ec) problem = fmt::format("cannot rename it to {}: {}", path, ec.message());
  }
  problem = first_problem(comm, problem);
  if (!problem.empty()) {
    if (rank == 0) fs::remove(tmp, ec);
    const WaitScope ws("MPI_Barrier (checkpoint written)", "checkpoint", 0);
    mpiCheck(MPI_Barrier(comm));
    fail(fmt::format("writing {} failed: {}; the file was removed", tmp, problem));
  }
}

std::string ParallelCheckpointWriter::write(MPI_Comm comm, const std::string& tmp,
                                            const std::vector<std::string>& descriptions,
                                            const std::vector<std::pair<std::string, std::string>>& attrs,
                                            int64_t step) const {
  const std::vector<std::vector<Described>> all = parse_descriptions(descriptions);
  int rank = 0, p = 0;
  mpiCheck(MPI_Comm_rank(comm, &rank));
  mpiCheck(MPI_Comm_size(comm, &p));
  h5::silence_errors();
  h5::Plist fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  h5::File f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl));
  // H5Fcreate is collective: a failure anywhere is one for all, with no file to close
  std::string problem = first_problem(comm, f.valid() ? "" : "cannot create the file");
  if (!problem.empty()) return problem;
  // the room, reserved before anything is written: HDF5's collective close hangs when a
  // metadata write fails on one rank only, so no write may fail for want of room
  problem = first_problem(comm, rank == 0 ? reserve_checkpoint_room(tmp, file_bytes(all, attrs)) : "");
  if (!problem.empty()) {
    f.close();
    return problem;
  }
  const auto note = [&](const std::string& what) {
    if (problem.empty()) problem = what;
  };
  {
    // collective: every rank creates every dataset, in the same order
    std::vector<h5::Dataset> my_sets;
    for (int r = 0; r < p; ++r)
      for (const Described& d : all[r]) {
        const size_t slash = d.name.rfind('/');
        h5::Dataspace sp(H5Screate_simple(1, &d.count, nullptr));
        h5::Dataset ds;
        try {
          h5::Group g = h5::ensure_group(f, d.name.substr(0, slash));
          ds.reset(H5Dcreate2(g, d.name.substr(slash + 1).c_str(), file_type(d.type), sp, H5P_DEFAULT,
                              H5P_DEFAULT, H5P_DEFAULT));
          if (!ds.valid()) note("cannot create " + d.name);
          else h5::write_attr(ds, "fnv1a", d.sum);
        } catch (const h5::Error& e) {
          note(e.what());
        }
        if (r == rank) my_sets.push_back(std::move(ds));
      }
    for (size_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      if (e.bytes.empty() || !my_sets[i].valid()) continue;
      errno = 0;
      if (H5Dwrite(my_sets[i], mem_type(e.type), H5S_ALL, H5S_ALL, H5P_DEFAULT, e.bytes.data()) < 0)
        note(fmt::format("{}: {}", rank_array_name(rank, e.name), write_error_reason(errno)));
    }
    const auto attr = [&](const std::string& name, const auto& value) {
      try {
        h5::write_attr(f, name, value);
      } catch (const h5::Error& e) {
        note(e.what());
      }
    };
    for (const auto& [k, v] : attrs) attr(k, bcast_string(comm, v));
    attr("step", step);
    attr("world_size", (int64_t)p);
    attr("parallax_checkpoint", (int64_t)1);
  }  // the datasets are closed here, before the file
  errno = 0;
  if (f.close() < 0) note(fmt::format("closing the file (rank {}): {}", rank, write_error_reason(errno)));
  return problem;
}

namespace {
template <class T>
int type_code() {
  if constexpr (std::is_same_v<T, float>) return 0;
  else if constexpr (std::is_same_v<T, int64_t>) return 1;
  else return 2;
}
}  // namespace

void verify_rank_part(const std::string& path, int rank) {
  const std::string group = rank_array_name(rank, "");
  try {
    h5::File f = h5::open_file(path, false);
    const std::string prefix = group.substr(0, group.size() - 1);  // "rank_00003"
    if (!h5::exists(f, prefix)) return;  // this rank wrote nothing there
    for (const std::string& name : h5::list_datasets(f)) {
      if (name.rfind(prefix + "/", 0) != 0) continue;
      h5::Dataset ds(H5Dopen2(f, name.c_str(), H5P_DEFAULT));
      if (!ds.valid()) throw h5::Error("cannot open " + name);
      h5::Dataspace sp(H5Dget_space(ds));
      const hssize_t n = H5Sget_simple_extent_npoints(sp);
      const hid_t type = H5Dget_type(ds);
      const size_t size = H5Tget_size(type);
      const bool is_float = H5Tget_class(type) == H5T_FLOAT;
      H5Tclose(type);
      const int code = is_float ? 0 : size == 8 ? 1 : 2;
      std::vector<uint8_t> bytes((size_t)n * size);
      if (n && H5Dread(ds, mem_type(code), H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()) < 0)
        throw h5::Error("cannot read " + name + " (truncated or corrupted)");
      if (fnv1a(bytes.data(), bytes.size()) != (uint64_t)h5::read_attr_int(ds, "fnv1a"))
        throw h5::Error("checksum mismatch in " + name + " (corrupted)");
    }
  } catch (const h5::Error& e) {
    throw UserError(fmt::format("checkpoint {}: {}", path, e.what()));
  }
}

bool has_rank_array(const std::string& path, int rank, const std::string& name) {
  h5::File f = h5::open_file(path, false);
  return h5::exists(f, rank_array_name(rank, name));
}

template <class T>
std::vector<T> read_rank_array(const std::string& path, int rank, const std::string& name,
                               size_t expected) {
  const std::string full = rank_array_name(rank, name);
  try {
    h5::File f = h5::open_file(path, false);
    if (!h5::exists(f, full)) throw h5::Error("no dataset " + full);
    h5::Dataset ds(H5Dopen2(f, full.c_str(), H5P_DEFAULT));
    h5::Dataspace sp(H5Dget_space(ds));
    const hssize_t n = H5Sget_simple_extent_npoints(sp);
    if ((size_t)n != expected)
      throw h5::Error(fmt::format("{} has {} elements, this config needs {}", full, n, expected));
    std::vector<T> out(expected);
    if (expected && H5Dread(ds, mem_type(type_code<T>()), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                            out.data()) < 0)
      throw h5::Error("cannot read " + full + " (truncated or corrupted)");
    const uint64_t want = (uint64_t)h5::read_attr_int(ds, "fnv1a");
    if (fnv1a((const uint8_t*)out.data(), out.size() * sizeof(T)) != want)
      throw h5::Error("checksum mismatch in " + full + " (corrupted)");
    return out;
  } catch (const h5::Error& e) {
    throw UserError(fmt::format("checkpoint {}: {}", path, e.what()));
  }
}

std::string checkpoint_attr(const std::string& path, const std::string& name) {
  try {
    h5::File f = h5::open_file(path, false);
    return h5::read_attr_string(f, name);
  } catch (const h5::Error& e) {
    throw UserError(fmt::format("checkpoint {}: {}", path, e.what()));
  }
}

int64_t checkpoint_world_size(const std::string& path) {
  try {
    h5::File f = h5::open_file(path, false);
    return h5::read_attr_int(f, "world_size");
  } catch (const h5::Error& e) {
    throw UserError(fmt::format("checkpoint {}: {}", path, e.what()));
  }
}

template std::vector<float> read_rank_array<float>(const std::string&, int, const std::string&,
                                                   size_t);
template std::vector<int64_t> read_rank_array<int64_t>(const std::string&, int,
                                                       const std::string&, size_t);
template std::vector<int32_t> read_rank_array<int32_t>(const std::string&, int,
                                                       const std::string&, size_t);

}  // namespace px
