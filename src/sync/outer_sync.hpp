#pragma once
// The backbone tier (DESIGN §5 item 2) on a learner: DiLoCo outer syncs of the F fragments at
// staggered steps. Each local rank r handles shard r of every fragment; its outer gradient
// delta = theta_global - theta_local is merged across islands either
//  - "allreduce": synchronously over the peers communicator (fp32 mean: MPI all-reduce;
//    other dtypes or RDA: all-gather of the encoded deltas, error feedback on the sender), then
//    the outer Nesterov step, identical on every island; or
//  - "syncer": pushed (non-blocking) to the syncer that owns the shard, which merges and
//    steps and sends back the new global shard; the learner mixes it in when it arrives
//    (theta = alpha global + (1 - alpha) theta), at once when train.deterministic.
// Then the island all-gathers the shards so all its ranks hold the whole fragment.
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"        // defines: Config
#include "backend/learner_model.hpp"  // defines: LearnerModel
#include "checkpoint/stateful.hpp"    // defines: StateReader
#include "model/moe_model.hpp"      // defines: MoeModel
#include "parallel/comm.hpp"        // defines: Comm
#include "parallel/topology.hpp"    // defines: Topology
#include "sync/error_feedback.hpp"  // defines: ErrorFeedback
#include "sync/fragments.hpp"       // defines: FragmentPlan
#include "wire/mpi_tags.hpp"         // defines: TAG_PUSH, reply_tag, TAG_CKPT, ...
#include "wire/push_header.hpp"      // defines: PushHeader

namespace px {

class OuterSync {  // (its state is checkpointed through save/load, by the backbone tier)
 public:
  // Reads and writes model's host copy, at its sync points (to_host before reading the
  // parameters, to_device after writing them).
  OuterSync(const Config& cfg, const Topology& topo, LearnerModel& model, Comm& peers,
            Comm& island, Comm& p2p);
  // After inner step `step` (steps completed), with `tokens` trained by this island since the
  // start: runs the fragments that are due and mixes in replies that have arrived.
  void after_step(int64_t step, int64_t tokens);
  // After a resume at `step` with `tokens` trained by the island: the token counts of the
  // fragments' last pushes (islands train the same number of tokens every step).
  void restore(int64_t step, int64_t tokens);
  // Syncer variant with a grace window: tell the syncers this island's step (local rank 0).
  void tick(int64_t step);
  // Syncer variant: wait for outstanding replies, then tell the syncers this rank is done.
  void finish();

  // Checkpoint state, my shard of every fragment: its global parameters, outer momentum and
  // error-feedback residual (outer/global/<f>, outer/momentum/<f>, outer/ef/<f>).
  void save(ParallelCheckpointWriter& w);
  void load(const StateReader& r);

  // The most heap one sync of a fragment of n parameters allocates on top of the state (for
  // `parallax plan`): the shard's gathered copies, the codec's buffers and every island's
  // decoded shard (all-reduce variant), the push and its reply (syncer variant), the
  // all-gathered fragment when the island has several ranks. Kept beside the code it sizes.
  static double scratch_bytes(const Config& cfg, double n, int island_ranks, int islands);

 private:
  void sync_allreduce(int f);
  void push(int f, int64_t step, int64_t tokens);
  // Mixes `global` into my shard, then the island all-gathers the fragment; host_current:
  // the host copy was brought up to date in this sync already.
  void apply_reply(int f, const float* global, bool host_current);
  // The island's shards of fragment f (mine: my shard's values) into every rank's arenas.
  void gather_fragment(int f, const std::vector<float>& mine);
  void params_to_host();
  void params_to_device();
  void poll_replies(bool wait);
  float* const* params() { return arenas_; }

  const Config& cfg_;
  const Topology& topo_;
  LearnerModel& model_;
  Comm &peers_, &island_, &p2p_;
  FragmentPlan plan_;
  int fragments_, every_, island_ranks_, local_rank_;
  float* arenas_[2];
  // per fragment, my shard (ZeRO-1 style: no rank holds the outer state of another's shard)
  std::vector<std::vector<float>> global_, momentum_;
  std::vector<ErrorFeedback> ef_;
  struct Pending {
    bool active = false;
    std::vector<uint8_t> send;
    std::vector<float> reply;
    MPI_Request sreq = MPI_REQUEST_NULL, rreq = MPI_REQUEST_NULL;
    int syncer = -1;  // world rank the push went to
  };
  std::vector<Pending> pending_;  // per fragment
  std::vector<int64_t> last_tokens_;  // per fragment: island tokens at its last push
};

// The syncer role (DESIGN §3, §5): holds the global backbone and outer momentum of the shards
// it owns (unit u = fragment * R + shard, owned by syncer u mod S), merges pushes once a
// quorum of islands has pushed (all islands when train.deterministic), token-weighted, by
// mean or RDA, takes the outer step and replies to every island.
class Syncer final : public Stateful {
 public:
  Syncer(const Config& cfg, const Topology& topo, Comm& p2p);
  // Serves until every learner has sent TAG_DONE. On TAG_CKPT (payload: int64 step) calls
  // on_checkpoint(step), which must join the learners' collective checkpoint write. On TAG_STOP
  // (an island stops; roles/stop_agreement.hpp) it merges every push from then on at once,
  // quorum or not, so that no learner waits on a reply while the islands agree where to stop.
  void run(const std::function<void(int64_t)>& on_checkpoint);
  // Checkpoint state: the global shard and outer momentum of every unit it owns.
  void save(ParallelCheckpointWriter& w) override;
  void load(const StateReader& r) override;
  int64_t merges() const { return merges_; }
  // Pushes older than the last merge of their unit (an island that fell behind: its outer
  // gradient joins the next merge).
  int64_t late_pushes() const { return late_pushes_; }

 private:
  struct UnitState {
    std::vector<float> theta, mom;
  };
  struct Unit {
    int f = 0, shard = 0;  // shard: the learners' local rank (of pipeline stage shard / D)
    int stage = 0;
    size_t lo = 0, hi = 0;
    UnitState st;
    // island -> its push as received (header + encoded outer gradient), decoded at the merge a
    // chunk at a time: a merge holds the islands' encoded shards, not I fp32 copies
    std::map<int, std::vector<uint8_t>> deltas;
    std::map<int, int64_t> tokens;             // island -> tokens trained since its last push
    int64_t quorum_step = -1;                  // step of the push that completed the quorum
    std::map<int, int64_t> steps;              // island -> step of its push
    int64_t merged_step = -1;                  // newest push step in the last merge
  };
  void on_push(std::vector<uint8_t>& msg, int source);  // throws on a malformed push; takes msg
  void merge(Unit& un);
  // The token-weighted merge (w: per island, in island order) of un's pushes into merged.
  void merge_decoded(const Unit& un, const std::vector<double>& w, float* merged) const;
  void merge_due();  // units past their quorum whose grace window has closed
  void merge_pending();  // every unit with pushes not merged yet
  // Islands that pushed to un, plus the islands waiting in the learners' agreement (TAG_WAIT).
  int present(const Unit& un) const;
  int needed() const;  // the quorum
 public:
  // Elements a merge decodes at a time from every island's push: a tensor piece with RDA (its
  // norm spans the piece), at most this many with the mean (elementwise).
  static constexpr size_t kMergeChunk = size_t(1) << 20;
 private:

  const Config& cfg_;
  const Topology& topo_;
  Comm& p2p_;
  std::vector<int64_t> island_step_;  // newest step each island has reported (push or tick)
  std::vector<FragmentPlan> plans_;  // per pipeline stage (one without pipelining)
  std::map<int, Unit> units_;
  struct OutMsg {
    std::shared_ptr<const std::vector<float>> data;  // one merge's reply, shared by its islands
    MPI_Request req = MPI_REQUEST_NULL;
  };
  std::vector<std::unique_ptr<OutMsg>> out_;
  int64_t merges_ = 0, late_pushes_ = 0;
  bool stopping_ = false;  // TAG_STOP received: no more quorum
  std::set<int> waiting_;  // islands in the learners' agreement (TAG_WAIT)
};

}  // namespace px
