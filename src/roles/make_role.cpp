// defines: make_role, stop_requested, clear_stop_request, install_preemption_handler
#include <atomic>
#include <csignal>

#include "roles/expert_worker_role.hpp"  // defines: ExpertWorkerRole
#include "roles/learner_role.hpp"        // defines: LearnerRole
#include "roles/role.hpp"
#include "roles/syncer_role.hpp"         // defines: SyncerRole

namespace px {

namespace {
std::atomic<int> g_preempted{0};
}  // namespace

bool stop_requested() { return g_preempted.load() != 0; }
void clear_stop_request() { g_preempted = 0; }
void install_preemption_handler() {
  // SIGUSR1: Slurm's warning (--signal=B:USR1@60); SIGTERM: scancel, the end of a job's time,
  // kill: every learner checkpoints at the next step and stops
  std::signal(SIGUSR1, [](int) { g_preempted = 1; });
  std::signal(SIGTERM, [](int) { g_preempted = 1; });
}

std::unique_ptr<Role> make_role(RunContext& ctx) {
  switch (ctx.topo.role) {
    case RoleKind::SYNCER:
      return std::make_unique<SyncerRole>(ctx);
    case RoleKind::EXPERT_WORKER:
      return std::make_unique<ExpertWorkerRole>(ctx);
    case RoleKind::LEARNER:
      break;
  }
  return std::make_unique<LearnerRole>(ctx);
}

}  // namespace px
