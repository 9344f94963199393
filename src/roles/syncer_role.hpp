#pragma once
// A syncer rank (DESIGN §3, §5 item 2): holds the global backbone shards it owns, merges the
// islands' pushes and replies (Syncer), joins the learners' checkpoints.
#include "checkpoint/checkpoint_registry.hpp"  // defines: CheckpointRegistry
#include "roles/role.hpp"                      // defines: Role
#include "sync/outer_sync.hpp"                 // defines: Syncer

namespace px {

class SyncerRole final : public Role {
 public:
  explicit SyncerRole(RunContext& ctx);
  void resume(const std::string& checkpoint) override;
  TrainResult run() override;

 private:
  RunContext& ctx_;
  Syncer syncer_;
  CheckpointRegistry registry_;
};

}  // namespace px
