// defines: checkpoint_room_problem, reserve_checkpoint_room, write_error_reason
#include "io/checkpoint_room.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace px {

std::string checkpoint_room_problem(const std::string& dir, uint64_t bytes, bool check_disk) {
  rlimit lim{};
  if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && bytes > lim.rlim_cur)
    return fmt::format("the checkpoint needs about {} bytes, more than this process's file-size limit of {} "
                       "(ulimit -f)", bytes, (uint64_t)lim.rlim_cur);
  if (!check_disk) return "";
  struct statvfs fs{};
  if (statvfs(dir.c_str(), &fs) != 0)
    return fmt::format("cannot query the free space of {}: {}", dir, std::strerror(errno));
  const uint64_t blocks = geteuid() == 0 ? fs.f_bfree : fs.f_bavail;
  const uint64_t free_bytes = blocks * (uint64_t)fs.f_frsize;
  if (bytes > free_bytes)
    return fmt::format("the disk is full: {} bytes free on the file system of {}, the checkpoint needs about {} bytes",
                       free_bytes, dir, bytes);
  return "";
}

std::string reserve_checkpoint_room(const std::string& path, uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) return fmt::format("cannot open {} to reserve its room: {}", path, std::strerror(errno));
  std::string problem;
  if (::fallocate(fd, 0, 0, (off_t)bytes) != 0) {
    const int err = errno;
    if (err != EOPNOTSUPP && err != ENOSYS) {
      problem = fmt::format("cannot reserve {} bytes for it: {}", bytes, write_error_reason(err));
      if (::ftruncate(fd, 0) != 0) problem += fmt::format("; emptying it failed: {}", std::strerror(errno));
    }
  }
  ::close(fd);
  return problem;
}

std::string write_error_reason(int err) {
  if (err == ENOSPC || err == EFBIG || err == EDQUOT)
    return fmt::format("{} (the disk is full, or over a quota or file-size limit)", std::strerror(err));
  return err ? std::strerror(err) : "the library reported an error";
}

}  // namespace px
