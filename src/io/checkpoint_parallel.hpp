#pragma once
// Checkpoints across ranks (DESIGN §8): one HDF5 file per checkpoint written with parallel
// HDF5 (MPI-IO). Every rank's arrays live in group "rank_XXXXX/"; all datasets are created
// collectively (every rank learns every rank's names and sizes first), then each rank writes
// its own. Each dataset carries an FNV-1a checksum attribute, verified on read. The file is
// written to a temporary name and renamed by rank 0 once every rank has closed it; before, the
// ranks agree that it fits (io/checkpoint_room.hpp), and after, that every rank wrote its part.
#include <mpi.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace px {

class ParallelCheckpointWriter {
 public:
  void add(const std::string& name, std::span<const float> data);
  void add(const std::string& name, std::span<const int64_t> data);
  void add(const std::string& name, std::span<const int32_t> data);
  // The same without a copy (the large arrays: parameters, moments, masters, outer state, so
  // that a checkpoint does not hold a second copy of the state): `data` must stay alive and
  // unchanged until commit() returns.
  void add_borrowed(const std::string& name, std::span<const float> data);
  // Collective over comm. String attributes and the step are taken from rank 0. Every failure
  // (no room for the file, a failed write or close on any rank) throws the same UserError on
  // every rank, naming the file and the lowest failing rank's reason; the .tmp file is removed
  // and nothing under `path` changes.
  void commit(MPI_Comm comm, const std::string& path,
              const std::vector<std::pair<std::string, std::string>>& attrs, int64_t step) const;

 private:
  // Writes `tmp` (collective; `descriptions`: every rank's datasets) and closes it; returns this
  // rank's first problem, "" when none. Never throws on an HDF5 failure, so that every rank
  // reaches the collective close.
  std::string write(MPI_Comm comm, const std::string& tmp, const std::vector<std::string>& descriptions,
                    const std::vector<std::pair<std::string, std::string>>& attrs, int64_t step) const;

  struct Entry {
    std::string name;
    int type;  // 0 float, 1 int64, 2 int32
    std::vector<uint8_t> owned;      // a copy (add), or empty
    std::span<const uint8_t> bytes;  // the data: owned's, or the caller's (add_borrowed)
  };
  void add_owned(const std::string& name, int type, std::vector<uint8_t> bytes);
  std::vector<Entry> entries_;
};

// "rank_00003/params/backbone"
std::string rank_array_name(int rank, const std::string& name);

// Reads one rank's array from a checkpoint, checking element count and checksum; every
// problem is a UserError naming the file and the dataset.
template <class T>
std::vector<T> read_rank_array(const std::string& path, int rank, const std::string& name,
                               size_t expected_count);
bool has_rank_array(const std::string& path, int rank, const std::string& name);
// Reads every array of `rank`'s part and checks its checksum; throws UserError naming the file
// and the first bad dataset. A rank with no part passes.
void verify_rank_part(const std::string& path, int rank);
// A string attribute of the checkpoint file (e.g. "config").
std::string checkpoint_attr(const std::string& path, const std::string& name);
int64_t checkpoint_world_size(const std::string& path);

}  // namespace px
