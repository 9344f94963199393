#pragma once
// Participants and the MPI mapping (DESIGN §3). World ranks, in order:
//   [i*R, (i+1)*R)          island i's learners, i in [0, I)   (local rank = rank - i*R)
//   [I*R, I*R + S)          syncers  (syncer index  = rank - I*R)
//   [I*R + S, I*R + S + W)  expert workers (worker index = rank - I*R - S)
// Topology is a pure function of the [topology] numbers and the world rank/size; every
// rank computes it without talking. Communicators splits MPI_COMM_WORLD once, at start.
#include <mpi.h>

namespace px {

enum class RoleKind { LEARNER, SYNCER, EXPERT_WORKER };
const char* role_name(RoleKind r);  // "learner", "syncer", "expert_worker"

struct Topology {
  int islands = 1, ranks_per_island = 1, syncers = 0, expert_workers = 0;
  int world_rank = 0, world_size = 1;

  RoleKind role = RoleKind::LEARNER;
  int island = -1;        // learners: island index; -1 on syncers and workers
  int local_rank = -1;    // learners: rank inside the island; -1 elsewhere
  int syncer_index = -1;  // syncers: index in [0, S); -1 elsewhere
  int worker_index = -1;  // expert workers: index in [0, W); -1 elsewhere

  // Throws px::UserError when world_size != I*R + S + W, naming every number:
  // "world size 5 does not match [topology]: islands 2 x ranks_per_island 2 + syncers 0 +
  //  expert_workers 0 = 4", or when a count is out of range (I, R >= 1; S, W >= 0) or
  // world_rank is outside [0, world_size).
  static Topology make(int islands, int ranks_per_island, int syncers, int expert_workers, int world_rank,
                       int world_size);

  // Pipelined islands (topology.pipeline_stages = P, set after make): an island's R ranks are
  // P stages of D = R / P ranks; local rank r is rank r mod D of stage r / D.
  int pipeline_stages = 1;
  int stage_ranks() const { return ranks_per_island / pipeline_stages; }
  int stage() const { return local_rank / stage_ranks(); }
  // The learner's part of the training data: every stage of a pipeline reads the same one.
  int data_parts() const { return islands * stage_ranks(); }
  int data_part() const { return island * stage_ranks() + local_rank % stage_ranks(); }

  int learners() const { return islands * ranks_per_island; }
  bool is_learner() const { return role == RoleKind::LEARNER; }
  // World rank of a participant.
  int learner_rank(int island_idx, int local) const { return island_idx * ranks_per_island + local; }
  int syncer_rank(int s) const { return learners() + s; }
  int worker_rank(int w) const { return learners() + syncers + w; }
};

// Communicators split from `world` once, at start (collective over world). Freed by the
// destructor, which must run before MPI_Finalize (it does nothing after it). MPI_COMM_NULL
// where a rank is not a member. Wrap one in px::Comm (non-owning) to count its traffic.
struct Communicators {
  MPI_Comm world = MPI_COMM_NULL;     // the communicator split from (not owned, not freed)
  MPI_Comm learners = MPI_COMM_NULL;  // all I*R learners, ordered by world rank; NULL elsewhere
  MPI_Comm island = MPI_COMM_NULL;    // the R learners of my island, rank = local_rank
  MPI_Comm peers = MPI_COMM_NULL;     // the I learners with my local rank, rank = island index
  MPI_Comm p2p = MPI_COMM_NULL;       // a dup of world for tagged point-to-point traffic
  MPI_Comm leaders = MPI_COMM_NULL;   // local rank 0 of every island, rank = island index
  MPI_Comm control = MPI_COMM_NULL;   // a dup of learners for the learners' own control messages
                                      // (stop proposals, island reports); NULL elsewhere

  static Communicators split(const Topology& topo, MPI_Comm world = MPI_COMM_WORLD);

  Communicators() = default;
  ~Communicators();
  Communicators(Communicators&& o) noexcept;
  Communicators& operator=(Communicators&& o) noexcept;
  Communicators(const Communicators&) = delete;
  Communicators& operator=(const Communicators&) = delete;

 private:
  void free_all();
};

}  // namespace px
