#pragma once
// The one registry of the MPI tags Parallax uses. Every tagged point-to-point message travels on
// the p2p communicator (Topology: a dup of world), so tags only need to be distinct there; the
// collectives (all-reduce, all-gather, all-to-all, broadcast) of the other communicators carry
// no tag. A receiver that probes MPI_ANY_TAG (Syncer::run, ExpertMessages::take_next) dispatches on
// these values, so two roles that can message the same rank must never share one.
//
// Values are part of the wire: do not renumber them.
//   60..62     expert tiers (tiers/expert_messages.*): learners <-> homes
//   90..93     control messages to the syncers (sync/outer_sync.*, tiers/backbone_tier.cpp)
//   70..71     learners' control messages (roles/stop_agreement.*, roles/island_reports.*), on
//              the learners' own control communicator (Communicators::control)
//   100        backbone pushes to the syncers
//   1000 + f   backbone replies of fragment f, syncer -> learner (a range: f = 0 .. F-1)
// The tests' own p2p traffic (tests/mpi/test_mpi_comm.cpp) uses the TAG_TEST_* values, on a
// communicator of its own.
namespace px {

enum MpiTag : int {
  // ---- expert tiers (mode "parallax"; ExpertMessages) -------------------------------------------
  // learner -> every home except itself (expert worker, or a learner homing experts): once per
  // step ONE sketch bundle, SketchBundleHeader (wire/sketch_bundle.hpp) + that home's sketches
  // (wire/sketch_wire.hpp), possibly none; its flags carry the learners' checkpoint / stop
  // decisions to the expert workers.
  TAG_SKETCH = 60,
  // home -> every learner except itself: a view message (ExpertHome::view_message: ternary or
  // low-rank views every snapshot_every steps, low-rank deltas every surrogate_every steps).
  TAG_SNAPSHOT = 61,
  // learner -> every home except itself: an adapter delta message (expert signal "adapters").
  TAG_ADAPTER = 62,

  // ---- learners' control (decoupled islands; on Communicators::control, not p2p) ----------------
  // island leader -> every other island's leader (on control) and every syncer (on p2p): int64
  // stop code (1 preempted, 2 diverged); this island stops: leaders join the agreement on the
  // step to stop at (StopAgreement), syncers merge every push at once from then on.
  TAG_STOP = 70,
  // island leader -> learner 0: the island's metrics of one log interval or evaluation
  // (IslandReport), written into metrics.h5 by learner 0 once every island's has arrived.
  TAG_REPORT = 71,

  // ---- backbone syncers (backbone_sync = "syncer"; OuterSync, Syncer) -----------------------
  // learner -> every syncer: empty; this learner has finished (OuterSync::finish). A syncer
  // serves until every learner has sent it.
  TAG_DONE = 90,
  // learner -> every syncer: int64 step; join the learners' collective checkpoint write of
  // that step (BackboneTier::before_checkpoint).
  TAG_CKPT = 91,
  // island local rank 0 -> every syncer: int64 {step, island}; the island's newest step, for
  // the grace window (OuterSync::tick, only when sync.grace_steps > 0).
  TAG_TICK = 92,
  // island local rank 0 -> every syncer: int64 {island, waiting}; waiting 1: the island waits in
  // the learners' agreement (roles/stop_agreement.hpp) and pushes nothing until its 0, so a
  // syncer counts it as present for the quorum (no island waits on a reply meanwhile).
  TAG_WAIT = 93,
  // learner -> the syncer owning the unit u = fragment * R + shard (syncer u mod S): PushHeader
  // (wire/push_header.hpp) + the encoded outer gradient of its shard (sync/codec.hpp). One tag
  // for every unit: the header names the unit.
  TAG_PUSH = 100,
  // syncer -> every island's learner of the shard: fp32 global shard of fragment f, on tag
  // TAG_REPLY + f (reply_tag). A range: fragments 0 .. F-1 use 1000 .. 999 + F.
  TAG_REPLY = 1000,

  // ---- tests only (tests/mpi/test_mpi_comm.cpp, on their own dup of world) ------------------
  // rank r -> rank r + 1: a ring exchange of bytes.
  TAG_TEST_RING = 7,
  // rank r -> rank r + 1 on tag TAG_TEST_PROBE + r (a range: 40 .. 39 + world size), so that
  // the receiver can tell the source from the tag.
  TAG_TEST_PROBE = 40,
};

// The tag of a backbone reply for fragment f (syncer -> learner).
constexpr int reply_tag(int fragment) { return TAG_REPLY + fragment; }

}  // namespace px
