#pragma once
// What every rank of a run shares before its role starts (open_run): the topology and the
// communicators, the byte counters, the logger, the run folder (checked and created before
// anything is written), the checkpoint a resume starts from, and for learners the data.
#include <mpi.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <string>

#include "config/config.hpp"        // defines: Config
#include "data/bpe_tokenizer.hpp"   // defines: BpeTokenizer
#include "data/token_shards.hpp"    // defines: TokenSplit
#include "parallel/comm.hpp"        // defines: Comm, CommStats
#include "parallel/topology.hpp"    // defines: Topology, Communicators
#include "train/trainer.hpp"        // defines: TrainOptions

namespace px {

struct RunContext {
  RunContext(const Config& cfg, const TrainOptions& opt);
  RunContext(const RunContext&) = delete;
  RunContext& operator=(const RunContext&) = delete;

  const Config& cfg;
  const TrainOptions& opt;
  MPI_Comm world;
  int world_rank = 0, world_size = 1;
  Topology topo;
  std::string run_dir, ckpt_dir;
  std::string resume_from;  // the agreed newest checkpoint ("" for a fresh run)
  std::unique_ptr<TokenSplit> train_split, val_split;  // learners only
  std::unique_ptr<BpeTokenizer> tokenizer;             // rank 0 only (into checkpoints)
  std::shared_ptr<spdlog::logger> log;
  Communicators comms;
  CommStats stats;
  Comm world_comm;  // the world, counted (start-up agreement)
  Comm p2p;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
};

// Validation, the run folder, the logger, the resume checkpoint, the communicators (collective
// over opt.world). A user error on any rank is thrown on every rank (UserError).
std::unique_ptr<RunContext> open_run(const Config& cfg, const TrainOptions& opt);

}  // namespace px
