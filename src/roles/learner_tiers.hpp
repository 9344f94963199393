#pragma once
// The tiers of a learner, in the order the loop calls them (tiers/sync_tier.hpp), built from
// the config: island (sync.island_every > 1), backbone (modes diloco, parallax), and in mode
// parallax the expert signal, the home (if this rank homes experts) and the views, wired to
// the model's routed-experts hook. Owns what the expert tiers share.
#include <memory>
#include <vector>

#include "backend/learner_model.hpp"  // defines: LearnerModel
#include "tiers/delivery.hpp"         // defines: Delivery
#include "tiers/expert_messages.hpp"  // defines: ExpertMessages
#include "tiers/sync_tier.hpp"        // defines: SyncTier

namespace px {

struct LearnerComms {
  Comm learners, island, peers, self;
  Comm leaders, control;  // island leaders; the learners' control messages (StopAgreement)
  // Pipelined islands (topology.pipeline_stages > 1; null Comms otherwise): the D ranks of my
  // island and stage (rank = rank in the stage), the P ranks of my island with my rank in
  // the stage (rank = stage), the I x D learners of my stage in every island.
  Comm stage, pipeline, stage_peers;
};

struct LearnerTiers {
  std::unique_ptr<ExpertMessages> messages;  // mode parallax (shared by the expert tiers)
  std::unique_ptr<Delivery> delivery;
  std::vector<std::unique_ptr<SyncTier>> tiers;
  ExpertHome* home = nullptr;  // mode parallax, when this rank homes experts
};

// Mode parallax: the model's host() must still hold the initial routed experts (the homes and
// views start from them); they are released afterwards.
LearnerTiers make_learner_tiers(const Config& cfg, const Topology& topo, LearnerModel& model,
                                LearnerComms& comms, Comm& p2p);

}  // namespace px
