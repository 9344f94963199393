#pragma once
// The messages of mode "parallax" between learners and expert homes (DESIGN §3, §5 items
// 3-4): non-blocking tagged point-to-point messages on the p2p communicator, counted per tier.
//   bundle (TAG_SKETCH, tier sketch; control when it holds no sketch): after each step every
//     learner sends every home except itself ONE bundle: header (step, flags) + the sketches
//     of that home's experts (possibly none: a deterministic home waits for one bundle per
//     learner and step). Bundles also carry the learners' checkpoint / stop decisions to
//     expert workers, which see no other traffic.
//   delta (TAG_ADAPTER, tier adapter): adapter signal, every adapter_every steps a learner's
//     adapter deltas of each home's experts (ExpertAdapters::take_deltas).
//   view message (TAG_SNAPSHOT, tier snapshot | surrogate): a home's views of its experts to
//     every learner except itself (ExpertHome::view_message).
// Homes: learners when W = 0 (those homing at least one expert), the W expert workers otherwise.
// This class sends, receives and counts what was received from whom; when to wait for what is
// the Delivery policy's (tiers/delivery.hpp).
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "config/config.hpp"        // defines: Config
#include "parallel/comm.hpp"        // defines: Comm
#include "parallel/topology.hpp"    // defines: Topology
#include "wire/mpi_tags.hpp"         // defines: TAG_SKETCH, TAG_SNAPSHOT, TAG_ADAPTER
#include "wire/sketch_bundle.hpp"    // defines: SketchBundleHeader, ExpertFlag
#include "experts/expert_home.hpp"     // defines: ExpertHome
#include "experts/expert_views.hpp"    // defines: ExpertViews

namespace px {

class ExpertMessages {
 public:
  ExpertMessages(const Config& cfg, const Topology& topo, Comm& p2p);

  // ---- sending (non-blocking; buffers kept until the sends complete)
  // Learner: its bundles for `step` (outbox: sketches by home world rank).
  void send_bundles(int64_t step, uint32_t flags,
                    std::map<int, std::vector<std::vector<uint8_t>>> outbox);
  // Learner: its delta message to every home except itself (an empty one where it has none).
  void send_deltas(std::map<int, std::vector<uint8_t>> by_home);
  // Home: `msg` to every learner except itself, counted in tier t (snapshot or surrogate); to
  // a stage of a pipelined island its stage's part of it (view_message_part).
  void send_view(std::vector<uint8_t> msg, Tier t);
  void wait_sends();  // completes this rank's outstanding sends
  void progress();    // releases the buffers of sends that have completed (non-blocking)

  // ---- receiving (src: a world rank or MPI_ANY_SOURCE; blocking unless it says so)
  struct Taken {
    uint32_t flags = 0;        // OR of the bundles' flags
    int64_t newest_step = -1;  // newest bundle step seen
  };
  // The next bundle from src, its sketches handed to home (checked against home_step); with
  // expected_step >= 0 a bundle of another step is an error (lockstep delivery).
  void take_bundle(int src, ExpertHome& home, int64_t home_step, Taken& t,
                   int64_t expected_step = -1);
  void take_delta(int src, ExpertHome& home);
  void take_view(int src, ExpertViews& views);
  bool arrived(int tag) { return p2p_.iprobe(MPI_ANY_SOURCE, tag).has_value(); }
  // Expert worker: the next bundle or delta message from any learner.
  void take_next(ExpertHome& home, int64_t home_step, Taken& t);

  // What was received from each world rank in this process.
  int64_t bundles_from(int rank) const { return bundles_from_[rank]; }
  int64_t deltas_from(int rank) const { return deltas_from_[rank]; }
  int64_t views_from(int rank) const { return views_from_[rank]; }
  // Steps whose bundles carried the STOP / CHECKPOINT flag, with how many learners said so.
  std::map<int64_t, int>& flagged(uint32_t flag) { return flag == EXPERT_FLAG_STOP ? stops_ : checkpoints_; }

  const std::vector<int>& homes() const { return homes_; }  // world ranks
  const Topology& topology() const { return topo_; }

 private:
  void send(const std::shared_ptr<std::vector<uint8_t>>& buf, int dest, int tag, Tier t);
  int recv_into(std::vector<uint8_t>& buf, int src, int tag);
  void parse_bundle(const std::vector<uint8_t>& buf, int src, ExpertHome& home, int64_t home_step,
                    Taken& t);

  const Config& cfg_;
  const Topology& topo_;
  Comm& p2p_;
  std::vector<int> homes_;
  struct Pending {
    MPI_Request req;
    std::shared_ptr<std::vector<uint8_t>> buf;  // shared by the sends of one view message
  };
  std::vector<Pending> sends_;
  std::vector<uint8_t> buf_;  // receive buffer
  std::vector<int64_t> bundles_from_, views_from_, deltas_from_;  // received, by world rank
  std::map<int64_t, int> stops_, checkpoints_;
};

}  // namespace px
