// defines: train
// The training run on every rank: the config is checked, the run folder, logger and
// communicators are set up (open_run), and this rank's role runs (roles/).
#include "train/trainer.hpp"

#include "roles/role.hpp"         // defines: make_role, clear_stop_request
#include "roles/on_all_ranks.hpp" // defines: on_all_ranks
#include "roles/run_context.hpp"  // defines: open_run

namespace px {

TrainResult train(const Config& cfg, const TrainOptions& opt) {
  check_supported(cfg);
  clear_stop_request();
  const std::unique_ptr<RunContext> ctx = open_run(cfg, opt);
  const std::unique_ptr<Role> role = make_role(*ctx);
  if (!ctx->resume_from.empty())
    on_all_ranks(ctx->world_comm, [&] { role->resume(ctx->resume_from); });
  return role->run();
}

}  // namespace px
