// defines: islands_decoupled, StopAgreement
#include "roles/stop_agreement.hpp"

#include <algorithm>

#include "wire/mpi_tags.hpp"  // defines: TAG_STOP

namespace px {

bool islands_decoupled(const Config& cfg, const Topology& topo) {
  return !cfg.train.deterministic && topo.islands > 1 && cfg.train.mode != TrainMode::SYNC &&
         cfg.sync.backbone_sync == BackboneSyncKind::SYNCER;
}

StopAgreement::StopAgreement(const Config& cfg, const Topology& topo, StopComms comms)
    : topo_(topo), c_(comms), decoupled_(islands_decoupled(cfg, topo)) {}

int64_t StopAgreement::decide(int64_t step, int64_t code, bool boundary) {
  if (decoupled_) return decide_decoupled(step, code, boundary);
  if (topo_.learners() > 1) c_.learners.allreduce_max(&code, 1, Tier::CONTROL);
  return code;
}

int64_t StopAgreement::decide_decoupled(int64_t step, int64_t code, bool boundary) {
  if (stop_step_ >= 0) return step >= stop_step_ ? stop_code_ : 0;
  const bool leader = topo_.local_rank == 0;
  if (leader) code = std::max(code, heard());
  if (c_.island.size() > 1) c_.island.allreduce_max(&code, 1, Tier::CONTROL);
  if (code == 0 && !boundary) return 0;
  int64_t step_code[2] = {step, code};
  if (leader) {
    if (code != 0 && heard_ == 0) propose(code);  // the first island to stop tells the others
    agree(step_code);
  }
  if (c_.island.size() > 1) c_.island.bcast(step_code, sizeof step_code, 0, Tier::CONTROL);
  if (step_code[1] == 0) return 0;  // a checkpoint that nobody stops at
  stop_step_ = step_code[0];
  stop_code_ = step_code[1];
  return step >= stop_step_ ? stop_code_ : 0;
}

int64_t StopAgreement::heard() {
  while (c_.control.iprobe(MPI_ANY_SOURCE, TAG_STOP)) take_proposals(1);
  return heard_;
}

void StopAgreement::take_proposals(int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t code = 0;
    c_.control.recv(&code, sizeof code, MPI_ANY_SOURCE, TAG_STOP);
    heard_ = std::max(heard_, code);
    ++received_;
  }
}

void StopAgreement::propose(int64_t code) {
  proposal_ = code;
  proposed_ = true;
  for (int i = 0; i < topo_.islands; ++i)
    if (i != topo_.island)
      sends_.push_back(c_.control.isend(&proposal_, sizeof proposal_,
                                        topo_.learner_rank(i, 0), TAG_STOP, Tier::CONTROL));
  for (int s = 0; s < topo_.syncers; ++s)
    sends_.push_back(c_.p2p.isend(&proposal_, sizeof proposal_, topo_.syncer_rank(s), TAG_STOP,
                                  Tier::CONTROL));
}

void StopAgreement::tell_syncers(int64_t waiting) {
  const int64_t msg[2] = {topo_.island, waiting};
  for (int s = 0; s < topo_.syncers; ++s) {
    MPI_Request rq = c_.p2p.isend(msg, sizeof msg, topo_.syncer_rank(s), TAG_WAIT, Tier::CONTROL);
    Comm::wait(rq, "MPI_Wait for an agreement notice to a syncer", topo_.syncer_rank(s));
  }
}

void StopAgreement::agree(int64_t* step_code) {
  tell_syncers(1);  // count me as present: nobody waits on a reply while I wait here
  c_.leaders.allreduce_max(step_code, 2, Tier::CONTROL);
  tell_syncers(0);
  if (step_code[1] == 0) return;
  // every proposal sent reaches every other leader: receive the ones still in flight
  int64_t proposers = proposed_ ? 1 : 0;
  c_.leaders.allreduce_sum(&proposers, 1, Tier::CONTROL);
  take_proposals(proposers - (proposed_ ? 1 : 0) - received_);
  Comm::wait_all(sends_);
  sends_.clear();
}

}  // namespace px
