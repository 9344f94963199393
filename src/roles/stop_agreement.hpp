#pragma once
// How the learners agree to stop early (a preemption signal; train.max_skipped_steps), so that
// every learner ends, and checkpoints, at the same step.
//   Coupled islands (mode sync, one island, or train.deterministic = true, where the islands step
//     together anyway): one all-reduce (max) of the stop code over all learners after every step.
//   Decoupled islands (islands_decoupled(): a straggler must not stall the others): nothing
//     crosses islands step by step. After every step an all-reduce (max) inside the island only.
//     An island whose code is not 0 tells the other islands' leaders and the syncers (TAG_STOP);
//     a leader sees it at its next step. Every leader then joins ONE all-reduce over the leaders
//     (the step it is at, the code): all islands train on to the largest of those steps and stop
//     there. Checkpoint steps are agreement points too (every island passes them together: the
//     checkpoint is collective), so an island waiting in a checkpoint and an island asking to
//     stop meet in the same agreement. No island may wait on a syncer's reply while the others
//     wait in the agreement: a leader tells the syncers when it enters and leaves one
//     (TAG_WAIT; a waiting island counts as present for the quorum), and a syncer told to stop
//     (TAG_STOP) merges every push at once from then on, as the islands train on to the
//     agreed step.
#include <cstdint>
#include <vector>

#include "config/config.hpp"      // defines: Config
#include "parallel/comm.hpp"      // defines: Comm
#include "parallel/topology.hpp"  // defines: Topology

namespace px {

// Whether the islands of this run step independently: train.deterministic = false, several
// islands, mode diloco or parallax with the backbone synced through syncers (with
// backbone_sync = "allreduce" the islands meet in every outer sync anyway).
bool islands_decoupled(const Config& cfg, const Topology& topo);

struct StopComms {
  Comm& learners;  // every learner (coupled agreement)
  Comm& island;    // my island
  Comm& leaders;   // local rank 0 of every island (null elsewhere)
  Comm& control;   // the learners' control communicator (TAG_STOP between leaders)
  Comm& p2p;       // TAG_STOP to the syncers
};

class StopAgreement {
 public:
  StopAgreement(const Config& cfg, const Topology& topo, StopComms comms);

  // After step `step`: `code` is this rank's view (0 go on, 1 preempted, 2 diverged);
  // `boundary`: a step every island passes together (a scheduled checkpoint, the last step).
  // Returns the agreed code when this island stops at `step`, else 0. Collective over the
  // learners (coupled) or the island (decoupled; over the leaders at agreements).
  int64_t decide(int64_t step, int64_t code, bool boundary);

  bool decoupled() const { return decoupled_; }

 private:
  int64_t decide_decoupled(int64_t step, int64_t code, bool boundary);
  int64_t heard();               // leader: the largest code other islands have sent
  void propose(int64_t code);    // leader: tell the other leaders and the syncers
  void agree(int64_t* step_code);  // leader: the agreement over the leaders
  void tell_syncers(int64_t waiting);  // leader: TAG_WAIT
  void take_proposals(int64_t n);  // leader: receive n proposals

  const Topology& topo_;
  StopComms c_;
  const bool decoupled_;
  int64_t stop_step_ = -1, stop_code_ = 0;  // once agreed
  int64_t heard_ = 0, received_ = 0;        // proposals from other leaders
  bool proposed_ = false;
  int64_t proposal_ = 0;  // the code sent (its buffer)
  std::vector<MPI_Request> sends_;
};

}  // namespace px
