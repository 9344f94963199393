#pragma once
// Deadlines on blocking MPI waits (sync.timeout_s): no rank waits forever for a peer that is
// stopped, dead or stuck. Every blocking call of the counting layer (Comm: collectives, recv,
// probe, wait, barrier) and of the checkpoint writer runs inside a WaitScope, which records
// what this rank is waiting for. A watchdog thread (started by set_wait_deadline; it makes no
// MPI call) looks at the open scope every 0.2 s; when one has lasted longer than the deadline
// it prints, on stderr and in the rank's terms,
//   parallax: rank 3 waited 5.0 s (sync.timeout_s = 5) in MPI_Recv on communicator "p2p"
//   for rank 4, tag 1000 (a backbone reply) ...
// and ends the process with exit code 3; mpirun (or srun --kill-on-bad-exit) then aborts the
// job with a non-zero exit. Nested scopes report the outermost one.
namespace px {

// seconds <= 0: no deadline (the watchdog, once started, stays idle). world_rank names the
// rank in the message.
void set_wait_deadline(double seconds, int world_rank);
double wait_deadline();

class WaitScope {
 public:
  // call: the MPI call ("MPI_Allreduce"); comm: the communicator's name; size: its ranks;
  // peer: the rank waited for (-1: every rank of it / unknown); tag: the message tag (-1: none).
  WaitScope(const char* call, const char* comm, int size, int peer = -1, int tag = -1);
  ~WaitScope();
  WaitScope(const WaitScope&) = delete;
  WaitScope& operator=(const WaitScope&) = delete;
};

// What a tag of wire/mpi_tags.hpp carries, for messages ("a backbone reply"); "" if unknown.
const char* tag_meaning(int tag);

}  // namespace px
