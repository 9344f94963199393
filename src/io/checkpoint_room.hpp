#pragma once
// Room for a checkpoint file of about `bytes` bytes, so that a full disk is one clear error on
// every rank instead of a failure inside parallel HDF5's collective writes (whose close hangs
// when a metadata write fails on one rank only):
//  - before the file exists, a check: this process's file-size limit (RLIMIT_FSIZE, `ulimit
//    -f`) and, where asked, the free space of the folder's file system (statvfs; what root may
//    use when running as root);
//  - once it is created, a reservation of its blocks (fallocate), so that a disk that fills
//    meanwhile cannot fail the writes; skipped where the file system cannot reserve.
#include <cstdint>
#include <string>

namespace px {

// "" when the file fits, else what is wrong ("the disk is full: 1048576 bytes free on the file
// system of runs/x/checkpoints, the checkpoint needs about 11299019 bytes").
std::string checkpoint_room_problem(const std::string& dir, uint64_t bytes, bool check_disk);

// Allocates the first `bytes` bytes of the existing file `path` (its size grows to `bytes`;
// HDF5's close cuts it back to what it wrote); "" when done or when the file system cannot
// (EOPNOTSUPP), else what is wrong, and the file is emptied again.
std::string reserve_checkpoint_room(const std::string& path, uint64_t bytes);

// strerror(err), with a hint for the errors of a full disk: "No space left on device (the disk
// is full, or over a quota or file-size limit)".
std::string write_error_reason(int err);

}  // namespace px
