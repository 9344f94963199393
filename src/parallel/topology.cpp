// Roles and communicators (see topology.hpp).
#include "parallel/topology.hpp"

#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "parallel/comm.hpp"  // defines: mpiCheck
#include "util/errors.hpp"    // defines: UserError

namespace px {

const char* role_name(RoleKind r) {
  switch (r) {
    case RoleKind::LEARNER: return "learner";
    case RoleKind::SYNCER: return "syncer";
    case RoleKind::EXPERT_WORKER: return "expert_worker";
  }
  return "?";
}

Topology Topology::make(int islands, int ranks_per_island, int syncers, int expert_workers, int world_rank,
                        int world_size) {
  if (islands < 1 || ranks_per_island < 1 || syncers < 0 || expert_workers < 0)
    throw UserError(fmt::format("[topology]: islands {} and ranks_per_island {} must be >= 1, syncers {} "
                                "and expert_workers {} >= 0",
                                islands, ranks_per_island, syncers, expert_workers));
  const int want = islands * ranks_per_island + syncers + expert_workers;
  if (world_size != want)
    throw UserError(fmt::format("world size {} does not match [topology]: islands {} x ranks_per_island {} "
                                "+ syncers {} + expert_workers {} = {}",
                                world_size, islands, ranks_per_island, syncers, expert_workers, want));
  if (world_rank < 0 || world_rank >= world_size)
    throw UserError(fmt::format("world rank {} outside world size {}", world_rank, world_size));

  Topology t;
  t.islands = islands;
  t.ranks_per_island = ranks_per_island;
  t.syncers = syncers;
  t.expert_workers = expert_workers;
  t.world_rank = world_rank;
  t.world_size = world_size;
  const int learners = islands * ranks_per_island;
  if (world_rank < learners) {
    t.role = RoleKind::LEARNER;
    t.island = world_rank / ranks_per_island;
    t.local_rank = world_rank % ranks_per_island;
  } else if (world_rank < learners + syncers) {
    t.role = RoleKind::SYNCER;
    t.syncer_index = world_rank - learners;
  } else {
    t.role = RoleKind::EXPERT_WORKER;
    t.worker_index = world_rank - learners - syncers;
  }
  return t;
}

// ---- Communicators ---------------------------------------------------------------------

namespace {

// `name` is what a deadline's message calls it (parallel/wait_deadline.hpp).
MPI_Comm split_or_null(MPI_Comm world, int color, int key, const char* name) {
  MPI_Comm c = MPI_COMM_NULL;
  mpiCheck(MPI_Comm_split(world, color, key, &c));
  if (c != MPI_COMM_NULL) {
    mpiCheck(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
    mpiCheck(MPI_Comm_set_name(c, name));
  }
  return c;
}

}  // namespace

Communicators Communicators::split(const Topology& topo, MPI_Comm world) {
  int size = 0, rank = 0;
  mpiCheck(MPI_Comm_size(world, &size));
  mpiCheck(MPI_Comm_rank(world, &rank));
  if (size != topo.world_size || rank != topo.world_rank)
    throw std::logic_error(fmt::format("Communicators::split: topology is for rank {} of {}, communicator has "
                                       "rank {} of {}",
                                       topo.world_rank, topo.world_size, rank, size));
  Communicators c;
  c.world = world;
  const bool learner = topo.is_learner();
  // Every split is collective over world: non-members pass MPI_UNDEFINED and get NULL.
  c.learners = split_or_null(world, learner ? 0 : MPI_UNDEFINED, rank, "learners");
  c.island = split_or_null(world, learner ? topo.island : MPI_UNDEFINED, topo.local_rank, "island");
  c.peers = split_or_null(world, learner ? topo.local_rank : MPI_UNDEFINED, topo.island, "peers");
  mpiCheck(MPI_Comm_dup(world, &c.p2p));
  mpiCheck(MPI_Comm_set_errhandler(c.p2p, MPI_ERRORS_RETURN));
  mpiCheck(MPI_Comm_set_name(c.p2p, "p2p"));
  c.leaders = split_or_null(world, learner && topo.local_rank == 0 ? 0 : MPI_UNDEFINED, topo.island,
                            "leaders");
  c.control = split_or_null(world, learner ? 0 : MPI_UNDEFINED, rank, "control");
  return c;
}

void Communicators::free_all() {
  int fin = 0;
  MPI_Finalized(&fin);
  for (MPI_Comm* c : {&learners, &island, &peers, &p2p, &leaders, &control}) {
    if (*c != MPI_COMM_NULL && !fin) MPI_Comm_free(c);
    *c = MPI_COMM_NULL;
  }
  world = MPI_COMM_NULL;
}

Communicators::~Communicators() { free_all(); }

Communicators::Communicators(Communicators&& o) noexcept
    : world(std::exchange(o.world, MPI_COMM_NULL)),
      learners(std::exchange(o.learners, MPI_COMM_NULL)),
      island(std::exchange(o.island, MPI_COMM_NULL)),
      peers(std::exchange(o.peers, MPI_COMM_NULL)),
      p2p(std::exchange(o.p2p, MPI_COMM_NULL)),
      leaders(std::exchange(o.leaders, MPI_COMM_NULL)),
      control(std::exchange(o.control, MPI_COMM_NULL)) {}

Communicators& Communicators::operator=(Communicators&& o) noexcept {
  if (this != &o) {
    free_all();
    world = std::exchange(o.world, MPI_COMM_NULL);
    learners = std::exchange(o.learners, MPI_COMM_NULL);
    island = std::exchange(o.island, MPI_COMM_NULL);
    peers = std::exchange(o.peers, MPI_COMM_NULL);
    p2p = std::exchange(o.p2p, MPI_COMM_NULL);
    leaders = std::exchange(o.leaders, MPI_COMM_NULL);
    control = std::exchange(o.control, MPI_COMM_NULL);
  }
  return *this;
}

}  // namespace px
