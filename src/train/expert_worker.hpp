#pragma once
// An expert worker's run (DESIGN §3: the last W ranks, mode "parallax"): the home of the
// routed experts placed on it; no data, no backbone. Each step it takes one sketch bundle from
// every learner, updates its experts every expert_update_every steps, snapshots them every
// snapshot_every steps, and checkpoints / stops when the learners' bundles say so.
#include <mpi.h>

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "config/config.hpp"      // defines: Config
#include "parallel/comm.hpp"      // defines: Comm
#include "parallel/topology.hpp"  // defines: Topology

namespace px {

void run_expert_worker(const Config& cfg, const Topology& topo, Comm& p2p, MPI_Comm world,
                       const std::string& ckpt_dir, const std::string& resume_from,
                       spdlog::logger& log);

}  // namespace px
