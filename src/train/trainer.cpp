// defines: train
// The training run on every rank: the config is checked, the run folder, logger and
// communicators are set up (open_run), and this rank's role runs (roles/).
#include "train/trainer.hpp"

#include "roles/role.hpp"         // defines: make_role, clear_stop_request
#include "roles/run_context.hpp"  // defines: open_run

namespace px {

TrainResult train(const Config& cfg, const TrainOptions& opt) {
  check_supported(cfg);
  clear_stop_request();
  const std::unique_ptr<RunContext> ctx = open_run(cfg, opt);
  return make_role(*ctx)->run();
}

}  // namespace px
