#pragma once
// The one counting layer all Parallax MPI traffic goes through (DESIGN §5: "every byte that
// crosses ranks is counted per tier, per rank"; §8: `/comm/<tier>/bytes`).
//
// A Comm wraps an MPI_Comm and a reference to the rank's CommStats. Each method does the MPI
// call AND adds to the tier's counter the bytes THIS rank SENDS, by one convention per
// collective, stated once here and kept everywhere (p = communicator size):
//
//   allreduce_* : a ring all-reduce (reduce-scatter + all-gather) sends 2*(p-1)/p * bytes from
//                 every rank; counted as round(2*(p-1)*bytes / p) (nearest, half up); 0 when
//                 p == 1. This is nccl-tests' "bus bytes"; OpenMPI may pick another algorithm,
//                 the count stays the algorithm-independent ring figure.
//   allgatherv  : my block reaches the p-1 other ranks: send_bytes * (p-1).
//   reduce_scatter_sum : the blocks of the other ranks leave me once: (bytes - my block's bytes)
//                 (with the all-gather of the result, the ring all-reduce's figure again).
//   alltoallv   : the sum of my send counts to the OTHER ranks (the block to myself is free).
//   bcast       : root counts bytes * (p-1), every other rank 0.
//   isend       : bytes, counted when the send is posted (also when dest == my rank).
//   irecv/recv/probe/barrier: 0 (received bytes are counted by their sender).
//
// Every MPI return code goes through mpiCheck(call), which names the call, the file:line and
// the rank, and aborts the job. Communicators this layer creates (dup/split here and in
// Communicators) get MPI_ERRORS_RETURN so that mpiCheck, not MPI's default handler, reports.
//
// Deadlines: every blocking method runs inside a WaitScope (parallel/wait_deadline.hpp), so a
// wait longer than sync.timeout_s ends the rank with a message naming the call, the
// communicator and the peer.
//
// Threads: CommStats counters are atomic, so a communication thread may count concurrently
// with the main thread; the MPI calls themselves follow the MPI thread level in use.
#include <mpi.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace px {

// ---- error checking ------------------------------------------------------------------
// Prints "parallax: MPI error on rank K in <call> (<file>:<line>): <MPI error string>" to
// stderr and calls MPI_Abort(MPI_COMM_WORLD, 1). Never returns.
[[noreturn]] void mpi_fail(int rc, const char* call, const char* file, int line);
inline void mpi_check(int rc, const char* call, const char* file, int line) {
  if (rc != MPI_SUCCESS) mpi_fail(rc, call, file, line);
}
#define mpiCheck(call) ::px::mpi_check((call), #call, __FILE__, __LINE__)

// ---- tiers ---------------------------------------------------------------------------
// DESIGN §8 names, in this order: the metrics datasets are /comm/<tier_name(t)>/bytes.
enum class Tier { ISLAND, BACKBONE, SKETCH, ADAPTER, SNAPSHOT, SURROGATE, EXPERT_PARALLEL, CONTROL, COUNT };
constexpr int kTierCount = static_cast<int>(Tier::COUNT);
const char* tier_name(Tier t);  // "island", "backbone", ..., "control"

// Bytes a rank sends in a ring all-reduce of `bytes` over p ranks (the convention above).
int64_t ring_allreduce_bytes(int64_t bytes, int p);

// ---- per-rank counters -----------------------------------------------------------------
class CommStats {
 public:
  CommStats() = default;
  CommStats(const CommStats&) = delete;
  CommStats& operator=(const CommStats&) = delete;

  void add(Tier t, int64_t bytes) { bytes_[idx(t)].fetch_add(bytes, std::memory_order_relaxed); }
  // Cumulative bytes sent by this rank in tier t since construction or the last reset().
  int64_t bytes(Tier t) const { return bytes_[idx(t)].load(std::memory_order_relaxed); }
  int64_t total() const;
  std::array<int64_t, kTierCount> snapshot() const;
  void reset();

  // Collective over `world` (every rank calls it). On `root`: [tier][rank] =
  // bytes(tier) of that rank at the time of the call (rows in Tier order, kTierCount of
  // them, each world-size long); on the other ranks: an empty vector. The gather is itself
  // traffic: after taking its snapshot each non-root rank adds kTierCount*8 bytes to CONTROL.
  std::vector<std::vector<int64_t>> gather_to_root(MPI_Comm world, int root = 0);

 private:
  static int idx(Tier t) { return static_cast<int>(t); }
  std::array<std::atomic<int64_t>, kTierCount> bytes_{};
};

// ---- counted communicator -------------------------------------------------------------
class Comm {
 public:
  // Non-owning: wraps `comm` (which must outlive this Comm); MPI_COMM_NULL gives a null Comm.
  Comm(MPI_Comm comm, CommStats& stats);
  // Owning: MPI_Comm_dup / MPI_Comm_split of `parent`, freed by the destructor. split with
  // color MPI_UNDEFINED gives a null Comm on that rank. Both are collective over parent.
  static Comm dup(MPI_Comm parent, CommStats& stats);
  static Comm split(MPI_Comm parent, int color, int key, CommStats& stats);
  ~Comm();
  Comm(Comm&& o) noexcept;
  Comm& operator=(Comm&& o) noexcept;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  MPI_Comm get() const { return comm_; }
  const char* name() const { return name_.c_str(); }  // MPI_Comm_get_name, for messages
  bool null() const { return comm_ == MPI_COMM_NULL; }
  int rank() const { return rank_; }  // -1 on a null Comm
  int size() const { return size_; }  // 0 on a null Comm
  CommStats& stats() const { return *stats_; }

  // In-place all-reduce of n elements. Deterministic: MPI_Allreduce over the same
  // communicator with the same op and count gives bit-identical results on every rank and
  // on every run for identical inputs (OpenMPI's tuned/basic collectives pick the algorithm,
  // and so the reduction order, from comm size and message size only). Results can differ
  // across comm sizes. n may exceed INT_MAX (the call is chunked).
  void allreduce_sum(float* data, int64_t n, Tier t);
  // An all-reduce of `bytes` over this group done outside MPI (NCCL on the GPUs): counted as
  // allreduce_sum of the same bytes would be.
  void count_allreduce(int64_t bytes, Tier t);
  void allreduce_sum(double* data, int64_t n, Tier t);
  void allreduce_sum(int64_t* data, int64_t n, Tier t);
  void allreduce_max(float* data, int64_t n, Tier t);
  void allreduce_max(double* data, int64_t n, Tier t);
  void allreduce_max(int64_t* data, int64_t n, Tier t);
  void allreduce_min(int64_t* data, int64_t n, Tier t);

  // In place over the blocks of counts (in rank order, packed, summing to the buffer's length;
  // counts.size() == size()): afterwards my block of data holds the sum over the ranks, the
  // other blocks are left as they were (ZeRO-1's gradient reduce-scatter).
  void reduce_scatter_sum(float* data, const std::vector<int>& counts, Tier t);
  // In place over the same blocks: every rank's block of data reaches every rank (ZeRO-1's
  // parameter all-gather); counted as allgatherv.
  void allgather_blocks(float* data, const std::vector<int>& counts, Tier t);

  // recv receives every rank's block in rank order, packed (displacements are the prefix
  // sums of recv_bytes); recv_bytes.size() == size() and recv_bytes[rank()] == send_bytes.
  void allgatherv(const void* send, int send_bytes, void* recv, const std::vector<int>& recv_bytes, Tier t);
  // Byte-based all-to-all: send_bytes[d] bytes at send + send_displs[d] go to rank d;
  // recv_bytes[s] bytes from rank s land at recv + recv_displs[s]. All vectors size() long.
  void alltoallv(const void* send, const std::vector<int>& send_bytes, const std::vector<int>& send_displs,
                 void* recv, const std::vector<int>& recv_bytes, const std::vector<int>& recv_displs, Tier t);
  // `bytes` from every rank to `root`, where recv gets them in rank order (size() * bytes;
  // recv is unused elsewhere). Counted on the senders other than root.
  void gather(const void* send, int bytes, void* recv, int root, Tier t);
  // `bytes` at data from `root` to every rank (chunked beyond INT_MAX).
  void bcast(void* data, int64_t bytes, int root, Tier t);

  // Non-blocking point-to-point (use a communicator of its own for these, DESIGN §3:
  // Communicators::p2p). The send buffer must stay untouched until the request completes.
  MPI_Request isend(const void* data, int bytes, int dest, int tag, Tier t);
  MPI_Request irecv(void* data, int bytes, int source, int tag);
  // Blocking receive; source/tag may be MPI_ANY_SOURCE/MPI_ANY_TAG. Returns the status
  // (status_bytes(st) = bytes received).
  MPI_Status recv(void* data, int bytes, int source, int tag);
  // Blocking / non-blocking probe: the status of the next matching message (iprobe: nullopt
  // when none is pending). status_bytes(st) gives its size, st.MPI_SOURCE and st.MPI_TAG
  // where it came from.
  MPI_Status probe(int source, int tag);
  std::optional<MPI_Status> iprobe(int source, int tag);
  static int status_bytes(const MPI_Status& st);
  // Request completion helpers (mpiCheck'ed). `what` and `peer` name the wait in the
  // message of an expired deadline (parallel/wait_deadline.hpp).
  static void wait(MPI_Request& req, const char* what = "MPI_Wait", int peer = -1);
  static void wait_all(std::vector<MPI_Request>& reqs, const char* what = "MPI_Waitall");
  static bool test(MPI_Request& req);

  void barrier();

 private:
  Comm(MPI_Comm comm, CommStats& stats, bool owned);
  void require_open(const char* what) const;
  void release();

  MPI_Comm comm_ = MPI_COMM_NULL;
  CommStats* stats_ = nullptr;
  bool owned_ = false;
  std::string name_;
  int rank_ = -1, size_ = 0;
};

}  // namespace px
