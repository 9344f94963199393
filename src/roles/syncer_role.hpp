#pragma once
// A syncer rank (DESIGN §3, §5 item 2): holds the global backbone shards it owns, merges the
// islands' pushes and replies (Syncer), joins the learners' checkpoints.
#include "roles/role.hpp"  // defines: Role

namespace px {

class SyncerRole final : public Role {
 public:
  explicit SyncerRole(RunContext& ctx) : ctx_(ctx) {}
  TrainResult run() override;

 private:
  RunContext& ctx_;
};

}  // namespace px
