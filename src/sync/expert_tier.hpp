#pragma once
// The expert signal and view tiers of mode "parallax" over MPI (DESIGN §3, §5 items 3-4):
// non-blocking tagged point-to-point messages on the p2p communicator.
//   sketch tier (Tier::SKETCH): after each step every learner sends every home except itself
//     ONE bundle: header (step, flags) + the sketches of that home's experts (possibly none:
//     a deterministic home waits for one bundle per learner and step). Bundles also carry the
//     learners' checkpoint / stop decisions to expert workers, which see no other traffic.
//   view tier (Tier::SNAPSHOT): every snapshot_every steps each home sends every learner except
//     itself the views of its experts (ExpertHome::view_message; tier "surrogate" for low-rank
//     deltas every surrogate_every steps); learners apply them to their ExpertViews.
// Homes: learners when W = 0 (those homing at least one expert), the W expert workers otherwise.
//
// train.deterministic = true: every home takes exactly one bundle per learner and step
// (receive_sketches) and every learner one snapshot per home and snapshot step
// (receive_snapshots), blocking. false: nobody waits; homes and learners take what has arrived
// (drain_*), and at the end of a run finish_learner() takes the rest, whose counts are known
// because every learner runs the same steps.
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "config/config.hpp"        // defines: Config
#include "model/param_layout.hpp"   // defines: ParamLayout
#include "parallel/comm.hpp"        // defines: Comm
#include "parallel/topology.hpp"    // defines: Topology
#include "sync/expert_home.hpp"     // defines: ExpertHome
#include "sync/expert_views.hpp"    // defines: ExpertViews

namespace px {

enum ExpertTag : int { TAG_SKETCH = 60, TAG_SNAPSHOT = 61, TAG_ADAPTER = 62 };
enum ExpertFlag : uint32_t { EXPERT_FLAG_CHECKPOINT = 1, EXPERT_FLAG_STOP = 2 };

struct SketchBundleHeader {
  uint32_t magic = 0x42535850u;  // "PXSB"
  uint32_t count = 0;            // sketches that follow, each as u32 bytes + a sketch message
  int64_t step = 0;
  uint32_t flags = 0;            // ExpertFlag bits
  uint32_t reserved = 0;
};
static_assert(sizeof(SketchBundleHeader) == 24);

class ExpertTier {
 public:
  ExpertTier(const Config& cfg, const Topology& topo, Comm& p2p);

  const std::vector<int>& homes() const { return homes_; }        // world ranks
  bool is_home(int rank) const;

  // Learner: sends its bundles for `step` (outbox: sketches by home world rank).
  void send_sketches(int64_t step, uint32_t flags,
                     std::map<int, std::vector<std::vector<uint8_t>>> outbox);
  // Home: receives one bundle of `step` from every learner except itself and hands the sketches
  // to `home`. Returns the OR of the bundles' flags.
  uint32_t receive_sketches(int64_t step, ExpertHome& home);
  // Home: sends `msg` (ExpertHome::view_message) to every learner except itself, counted in
  // tier t (snapshot or surrogate).
  void send_snapshot(std::vector<uint8_t> msg, Tier t);
  // Learner: receives one view message from every home except itself and applies it.
  void receive_snapshots(ExpertViews& views);
  // Adapter signal: a learner sends its delta message to every home except itself (tier
  // "adapter"); a deterministic home folds one message from every learner except itself,
  // a non-deterministic one those that have arrived (drain_deltas).
  void send_deltas(std::map<int, std::vector<uint8_t>> by_home);
  void receive_deltas(ExpertHome& home);
  int drain_deltas(ExpertHome& home);
  // Completes this rank's outstanding sends (their buffers are then released).
  void wait_sends();
  // Releases the buffers of sends that have completed (non-blocking).
  void progress();

  // ---- non-deterministic variant -------------------------------------------------------
  struct Drained {
    uint32_t flags = 0;        // OR of the bundles' flags
    int64_t newest_step = -1;  // newest bundle step seen
    int bundles = 0;
    int deltas = 0;            // adapter delta messages folded
  };
  // Expert worker: blocks for the next bundle or delta message from any learner and takes it.
  Drained take_next(ExpertHome& home, int64_t home_step);
  // Expert worker at the end: takes the delta messages still in flight (`deltas` per learner).
  void finish_worker(ExpertHome& home, int64_t deltas);
  // Home: every bundle that has arrived (from any learner), sketches checked against
  // home_step. With `one`, stops after one bundle and blocks until it comes (expert workers).
  Drained drain_sketches(ExpertHome& home, int64_t home_step, bool one = false);
  // Learner: applies every snapshot that has arrived.
  void drain_snapshots(ExpertViews& views);
  // Learner at the end of a non-deterministic run of `steps` steps with `snapshots` view and
  // `deltas` adapter steps: takes the bundles and deltas (home) and the view messages still in
  // flight, then completes its sends.
  void finish_learner(ExpertHome* home, int64_t home_step, int64_t steps, int64_t snapshots,
                      int64_t deltas, ExpertViews& views);
  // Expert worker: bundles with the STOP / CHECKPOINT flag seen per step.
  std::map<int64_t, int>& flagged(uint32_t flag) { return flag == EXPERT_FLAG_STOP ? stops_ : ckpts_; }

 private:
  void take_bundle(const std::vector<uint8_t>& buf, int src, ExpertHome& home, int64_t home_step,
                   Drained& d);
  void send(const std::shared_ptr<std::vector<uint8_t>>& buf, int dest, int tag, Tier t);
  int recv_into(std::vector<uint8_t>& buf, int src, int tag);
  void take_snapshot(std::vector<uint8_t>& buf, int src, ExpertViews& views);

  const Topology& topo_;
  Comm& p2p_;
  std::vector<int> homes_;
  struct Pending {
    MPI_Request req;
    std::shared_ptr<std::vector<uint8_t>> buf;  // shared by the sends of one snapshot
  };
  std::vector<Pending> sends_;
  std::vector<int64_t> bundles_from_, snapshots_from_, deltas_from_;  // received, by world rank
  void take_delta(std::vector<uint8_t>& buf, int src, ExpertHome& home);
  std::map<int64_t, int> stops_, ckpts_;
};

}  // namespace px
