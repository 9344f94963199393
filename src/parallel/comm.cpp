// Counted MPI communication (see comm.hpp for the byte-counting convention).
#include "parallel/comm.hpp"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "parallel/wait_deadline.hpp"  // defines: WaitScope

namespace px {

// ---- errors ----------------------------------------------------------------------------

void mpi_fail(int rc, const char* call, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING] = "unknown error";
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  int rank = -1, init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "parallax: MPI error on rank %d in %s (%s:%d): %s (code %d)\n", rank, call,
               file, line, msg, rc);
  std::fflush(stderr);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

// ---- tiers -----------------------------------------------------------------------------

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::ISLAND: return "island";
    case Tier::BACKBONE: return "backbone";
    case Tier::SKETCH: return "sketch";
    case Tier::ADAPTER: return "adapter";
    case Tier::SNAPSHOT: return "snapshot";
    case Tier::SURROGATE: return "surrogate";
    case Tier::EXPERT_PARALLEL: return "expert_parallel";
    case Tier::CONTROL: return "control";
    case Tier::COUNT: break;
  }
  throw std::invalid_argument(fmt::format("tier_name: no tier {}", static_cast<int>(t)));
}

int64_t ring_allreduce_bytes(int64_t bytes, int p) {
  if (p <= 1) return 0;
  // round(2*(p-1)*bytes / p), nearest with halves up, in integers
  return (2 * static_cast<int64_t>(p - 1) * bytes + p / 2) / p;
}

void Comm::count_allreduce(int64_t bytes, Tier t) {
  stats_->add(t, ring_allreduce_bytes(bytes, size_));
}

// ---- CommStats -------------------------------------------------------------------------

int64_t CommStats::total() const {
  int64_t s = 0;
  for (const auto& b : bytes_) s += b.load(std::memory_order_relaxed);
  return s;
}

std::array<int64_t, kTierCount> CommStats::snapshot() const {
  std::array<int64_t, kTierCount> out{};
  for (int t = 0; t < kTierCount; ++t) out[t] = bytes_[t].load(std::memory_order_relaxed);
  return out;
}

void CommStats::reset() {
  for (auto& b : bytes_) b.store(0, std::memory_order_relaxed);
}

std::vector<std::vector<int64_t>> CommStats::gather_to_root(MPI_Comm world, int root) {
  int rank = 0, size = 0;
  mpiCheck(MPI_Comm_rank(world, &rank));
  mpiCheck(MPI_Comm_size(world, &size));
  const std::array<int64_t, kTierCount> mine = snapshot();
  std::vector<int64_t> all(rank == root ? static_cast<size_t>(size) * kTierCount : 0);  // [rank][tier]
  {
    WaitScope ws("MPI_Gather (byte counts)", "", size);
    mpiCheck(MPI_Gather(mine.data(), kTierCount, MPI_INT64_T, all.data(), kTierCount, MPI_INT64_T, root, world));
  }
  if (rank != root) {
    add(Tier::CONTROL, static_cast<int64_t>(kTierCount) * sizeof(int64_t));
    return {};
  }
  std::vector<std::vector<int64_t>> out(kTierCount, std::vector<int64_t>(size));
  for (int r = 0; r < size; ++r)
    for (int t = 0; t < kTierCount; ++t) out[t][r] = all[static_cast<size_t>(r) * kTierCount + t];
  return out;
}

// ---- Comm: lifetime --------------------------------------------------------------------

Comm::Comm(MPI_Comm comm, CommStats& stats) : Comm(comm, stats, false) {}

Comm::Comm(MPI_Comm comm, CommStats& stats, bool owned) : comm_(comm), stats_(&stats), owned_(owned) {
  if (comm_ != MPI_COMM_NULL) {
    mpiCheck(MPI_Comm_rank(comm_, &rank_));
    mpiCheck(MPI_Comm_size(comm_, &size_));
    char name[MPI_MAX_OBJECT_NAME] = "";
    int len = 0;
    mpiCheck(MPI_Comm_get_name(comm_, name, &len));
    name_.assign(name, len);
  }
}

Comm Comm::dup(MPI_Comm parent, CommStats& stats) {
  MPI_Comm c = MPI_COMM_NULL;
  mpiCheck(MPI_Comm_dup(parent, &c));
  mpiCheck(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
  return Comm(c, stats, true);
}

Comm Comm::split(MPI_Comm parent, int color, int key, CommStats& stats) {
  MPI_Comm c = MPI_COMM_NULL;
  mpiCheck(MPI_Comm_split(parent, color, key, &c));
  if (c != MPI_COMM_NULL) mpiCheck(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
  return Comm(c, stats, true);
}

void Comm::release() {
  if (owned_ && comm_ != MPI_COMM_NULL) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&comm_);  // no mpiCheck: destructors must not abort the job
  }
  comm_ = MPI_COMM_NULL;
  owned_ = false;
  rank_ = -1;
  size_ = 0;
}

Comm::~Comm() { release(); }

Comm::Comm(Comm&& o) noexcept
    : comm_(std::exchange(o.comm_, MPI_COMM_NULL)),
      stats_(o.stats_),
      owned_(std::exchange(o.owned_, false)),
      name_(std::move(o.name_)),
      rank_(std::exchange(o.rank_, -1)),
      size_(std::exchange(o.size_, 0)) {}

Comm& Comm::operator=(Comm&& o) noexcept {
  if (this != &o) {
    release();
    comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
    stats_ = o.stats_;
    owned_ = std::exchange(o.owned_, false);
    name_ = std::move(o.name_);
    rank_ = std::exchange(o.rank_, -1);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void Comm::require_open(const char* what) const {
  if (comm_ == MPI_COMM_NULL)
    throw std::logic_error(fmt::format("Comm::{} called on a null communicator", what));
}

// ---- Comm: collectives -----------------------------------------------------------------

namespace {

constexpr int64_t kChunk = int64_t{1} << 30;  // elements (or bytes) per MPI call, < INT_MAX

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }
template <>
MPI_Datatype mpi_type<int64_t>() { return MPI_INT64_T; }

// In-place all-reduce, chunked so n may exceed INT_MAX. Counted once for the whole buffer.
template <class T>
void allreduce_impl(Comm& c, T* data, int64_t n, MPI_Op op, Tier t) {
  if (n < 0) throw std::invalid_argument(fmt::format("allreduce: negative count {}", n));
  for (int64_t off = 0; off < n; off += kChunk) {
    const int cnt = static_cast<int>(std::min(kChunk, n - off));
    WaitScope ws("MPI_Allreduce", c.name(), c.size());
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, data + off, cnt, mpi_type<T>(), op, c.get()));
  }
  c.stats().add(t, ring_allreduce_bytes(n * static_cast<int64_t>(sizeof(T)), c.size()));
}

void check_len(const std::vector<int>& v, int p, const char* what, const char* op) {
  if (static_cast<int>(v.size()) != p)
    throw std::invalid_argument(fmt::format("{}: {} has {} entries, communicator size is {}", op, what, v.size(), p));
}

}  // namespace

void Comm::allreduce_sum(float* d, int64_t n, Tier t) { require_open("allreduce_sum"); allreduce_impl(*this, d, n, MPI_SUM, t); }
void Comm::allreduce_sum(double* d, int64_t n, Tier t) { require_open("allreduce_sum"); allreduce_impl(*this, d, n, MPI_SUM, t); }
void Comm::allreduce_sum(int64_t* d, int64_t n, Tier t) { require_open("allreduce_sum"); allreduce_impl(*this, d, n, MPI_SUM, t); }
void Comm::allreduce_max(float* d, int64_t n, Tier t) { require_open("allreduce_max"); allreduce_impl(*this, d, n, MPI_MAX, t); }
void Comm::allreduce_max(double* d, int64_t n, Tier t) { require_open("allreduce_max"); allreduce_impl(*this, d, n, MPI_MAX, t); }
void Comm::allreduce_max(int64_t* d, int64_t n, Tier t) { require_open("allreduce_max"); allreduce_impl(*this, d, n, MPI_MAX, t); }

namespace {
std::vector<int> prefix_displs(const std::vector<int>& counts, const char* op) {
  std::vector<int> displs(counts.size());
  int64_t off = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    if (off > INT_MAX) throw std::invalid_argument(fmt::format("{}: more than INT_MAX elements in total", op));
    displs[r] = static_cast<int>(off);
    off += counts[r];
  }
  return displs;
}
}  // namespace

void Comm::reduce_scatter_sum(float* data, const std::vector<int>& counts, Tier t) {
  require_open("reduce_scatter_sum");
  check_len(counts, size_, "counts", "reduce_scatter_sum");
  const std::vector<int> displs = prefix_displs(counts, "reduce_scatter_sum");
  std::vector<float> mine(counts[rank_]);
  {
    WaitScope ws("MPI_Reduce_scatter", name(), size_);
    mpiCheck(MPI_Reduce_scatter(data, mine.data(), counts.data(), MPI_FLOAT, MPI_SUM, comm_));
  }
  std::copy(mine.begin(), mine.end(), data + displs[rank_]);
  const int64_t total = (int64_t)displs.back() + counts.back();
  stats_->add(t, (total - counts[rank_]) * (int64_t)sizeof(float));
}

void Comm::allgather_blocks(float* data, const std::vector<int>& counts, Tier t) {
  require_open("allgather_blocks");
  check_len(counts, size_, "counts", "allgather_blocks");
  const std::vector<int> displs = prefix_displs(counts, "allgather_blocks");
  WaitScope ws("MPI_Allgatherv", name(), size_);
  mpiCheck(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displs.data(),
                          MPI_FLOAT, comm_));
  stats_->add(t, (int64_t)counts[rank_] * (int64_t)sizeof(float) * (size_ - 1));
}

void Comm::allgatherv(const void* send, int send_bytes, void* recv, const std::vector<int>& recv_bytes, Tier t) {
  require_open("allgatherv");
  check_len(recv_bytes, size_, "recv_bytes", "allgatherv");
  if (recv_bytes[rank_] != send_bytes)
    throw std::invalid_argument(fmt::format("allgatherv: recv_bytes[{}] = {} but this rank sends {} bytes",
                                            rank_, recv_bytes[rank_], send_bytes));
  std::vector<int> displs(size_);
  int64_t off = 0;
  for (int r = 0; r < size_; ++r) {
    if (off > INT_MAX) throw std::invalid_argument("allgatherv: more than INT_MAX bytes in total");
    displs[r] = static_cast<int>(off);
    off += recv_bytes[r];
  }
  WaitScope ws("MPI_Allgatherv", name(), size_);
  mpiCheck(MPI_Allgatherv(send, send_bytes, MPI_BYTE, recv, recv_bytes.data(), displs.data(), MPI_BYTE, comm_));
  stats_->add(t, static_cast<int64_t>(send_bytes) * (size_ - 1));
}

void Comm::alltoallv(const void* send, const std::vector<int>& send_bytes, const std::vector<int>& send_displs,
                     void* recv, const std::vector<int>& recv_bytes, const std::vector<int>& recv_displs, Tier t) {
  require_open("alltoallv");
  check_len(send_bytes, size_, "send_bytes", "alltoallv");
  check_len(send_displs, size_, "send_displs", "alltoallv");
  check_len(recv_bytes, size_, "recv_bytes", "alltoallv");
  check_len(recv_displs, size_, "recv_displs", "alltoallv");
  WaitScope ws("MPI_Alltoallv", name(), size_);
  mpiCheck(MPI_Alltoallv(send, send_bytes.data(), send_displs.data(), MPI_BYTE, recv, recv_bytes.data(),
                         recv_displs.data(), MPI_BYTE, comm_));
  int64_t to_others = 0;
  for (int d = 0; d < size_; ++d)
    if (d != rank_) to_others += send_bytes[d];
  stats_->add(t, to_others);
}

void Comm::allreduce_min(int64_t* d, int64_t n, Tier t) { require_open("allreduce_min"); allreduce_impl(*this, d, n, MPI_MIN, t); }

void Comm::gather(const void* send, int bytes, void* recv, int root, Tier t) {
  require_open("gather");
  if (root < 0 || root >= size_)
    throw std::invalid_argument(fmt::format("gather: root {} outside communicator of size {}", root, size_));
  WaitScope ws("MPI_Gather", name(), size_, root);
  mpiCheck(MPI_Gather(send, bytes, MPI_BYTE, recv, bytes, MPI_BYTE, root, comm_));
  if (rank_ != root) stats_->add(t, bytes);
}

void Comm::bcast(void* data, int64_t bytes, int root, Tier t) {
  require_open("bcast");
  if (root < 0 || root >= size_)
    throw std::invalid_argument(fmt::format("bcast: root {} outside communicator of size {}", root, size_));
  auto* p = static_cast<char*>(data);
  WaitScope ws("MPI_Bcast", name(), size_, root);
  for (int64_t off = 0; off < bytes; off += kChunk)
    mpiCheck(MPI_Bcast(p + off, static_cast<int>(std::min(kChunk, bytes - off)), MPI_BYTE, root, comm_));
  if (rank_ == root) stats_->add(t, bytes * (size_ - 1));
}

// ---- Comm: point-to-point --------------------------------------------------------------

MPI_Request Comm::isend(const void* data, int bytes, int dest, int tag, Tier t) {
  require_open("isend");
  MPI_Request req = MPI_REQUEST_NULL;
  mpiCheck(MPI_Isend(data, bytes, MPI_BYTE, dest, tag, comm_, &req));
  stats_->add(t, bytes);
  return req;
}

MPI_Request Comm::irecv(void* data, int bytes, int source, int tag) {
  require_open("irecv");
  MPI_Request req = MPI_REQUEST_NULL;
  mpiCheck(MPI_Irecv(data, bytes, MPI_BYTE, source, tag, comm_, &req));
  return req;
}

MPI_Status Comm::recv(void* data, int bytes, int source, int tag) {
  require_open("recv");
  MPI_Status st;
  WaitScope ws("MPI_Recv", name(), size_, source, tag);
  mpiCheck(MPI_Recv(data, bytes, MPI_BYTE, source, tag, comm_, &st));
  return st;
}

MPI_Status Comm::probe(int source, int tag) {
  require_open("probe");
  MPI_Status st;
  WaitScope ws("MPI_Probe", name(), size_, source, tag);
  mpiCheck(MPI_Probe(source, tag, comm_, &st));
  return st;
}

std::optional<MPI_Status> Comm::iprobe(int source, int tag) {
  require_open("iprobe");
  MPI_Status st;
  int flag = 0;
  mpiCheck(MPI_Iprobe(source, tag, comm_, &flag, &st));
  if (!flag) return std::nullopt;
  return st;
}

int Comm::status_bytes(const MPI_Status& st) {
  int n = 0;
  mpiCheck(MPI_Get_count(&st, MPI_BYTE, &n));
  return n;
}

void Comm::wait(MPI_Request& req, const char* what, int peer) {
  WaitScope ws(what, "", 0, peer);
  mpiCheck(MPI_Wait(&req, MPI_STATUS_IGNORE));
}

void Comm::wait_all(std::vector<MPI_Request>& reqs, const char* what) {
  WaitScope ws(what, "", 0);
  mpiCheck(MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE));
}

bool Comm::test(MPI_Request& req) {
  int flag = 0;
  mpiCheck(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
  return flag != 0;
}

void Comm::barrier() {
  require_open("barrier");
  WaitScope ws("MPI_Barrier", name(), size_);
  mpiCheck(MPI_Barrier(comm_));
}

}  // namespace px
