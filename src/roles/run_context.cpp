// defines: RunContext, open_run
#include "roles/run_context.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "parallel/wait_deadline.hpp"  // defines: set_wait_deadline

#include <filesystem>

#include "backend/gpu_step.hpp"      // defines: GpuStepper::require
#include "checkpoint/resume.hpp"     // defines: check_resume_compatible
#include "io/checkpoint_file.hpp"    // defines: newest_checkpoint, complete_checkpoints
#include "io/checkpoint_parallel.hpp"  // defines: verify_rank_part
#include "roles/on_all_ranks.hpp"    // defines: on_all_ranks
#include "util/errors.hpp"           // defines: UserError

namespace px {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> make_logger(const std::string& run_dir, int rank, bool console) {
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(
      fmt::format("{}/logs/rank{}.log", run_dir, rank));
  std::vector<spdlog::sink_ptr> sinks{file};
  if (console) sinks.push_back(std::make_shared<spdlog::sinks::stdout_color_sink_mt>());
  auto lg = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  lg->set_pattern("[%H:%M:%S] %v");
  lg->flush_on(spdlog::level::info);
  return lg;
}

void bcast_string(Comm& world, std::string& s) {
  int64_t n = (int64_t)s.size();
  world.bcast(&n, sizeof n, 0, Tier::CONTROL);
  s.resize((size_t)n);
  world.bcast(s.data(), n, 0, Tier::CONTROL);
}

// The newest checkpoint whose every part verifies (each rank reads its own part and checks the
// checksums; agreed by all): a damaged newer one is skipped with a warning for the one before;
// when there are checkpoints and none verifies, a user error (nothing is overwritten). No
// checkpoint at all: "" (a run killed before its first one starts again).
std::string agreed_checkpoint(Comm& world, const std::string& dir) {
  std::vector<std::string> paths;
  if (world.rank() == 0)
    for (const auto& [step, path] : complete_checkpoints(dir)) paths.push_back(path);
  int64_t count = (int64_t)paths.size();
  world.bcast(&count, sizeof count, 0, Tier::CONTROL);
  std::string last_error;
  for (int64_t i = 0; i < count; ++i) {
    std::string path = world.rank() == 0 ? paths[(size_t)i] : "";
    bcast_string(world, path);
    try {
      on_all_ranks(world, [&] { verify_rank_part(path, world.rank()); });
      return path;
    } catch (const UserError& e) {
      last_error = e.what();
      if (world.rank() == 0) spdlog::warn("--resume: skipping {}", last_error);
    }
  }
  if (count > 0)
    throw UserError(fmt::format("--resume: none of the {} checkpoints in {} verifies (last: {}); "
                                "nothing was changed: restore a good checkpoint there, or start "
                                "a new run without --resume in another --out",
                                count, dir, last_error));
  return "";
}

int rank_of(MPI_Comm c) {
  int r = 0;
  MPI_Comm_rank(c, &r);
  return r;
}

int size_of(MPI_Comm c) {
  int n = 1;
  MPI_Comm_size(c, &n);
  return n;
}

// Data and run folder checks, on every rank, before anything is written.
void check_inputs(RunContext& ctx) {
  const Config& cfg = ctx.cfg;
  if (cfg.train.device == DeviceKind::CUDA) GpuStepper::require();
  // workers never see the data (DESIGN §1); syncers merge outer gradients and need none either
  if (!ctx.topo.is_learner()) return;
  const int part = ctx.topo.data_part();
  ctx.val_split = std::make_unique<TokenSplit>(cfg.data.dir, "val");
  ctx.train_split = std::make_unique<TokenSplit>(cfg.data.dir, "train", part, ctx.topo.data_parts());
  if (ctx.train_split->vocab_size() > cfg.model.vocab)
    throw UserError(fmt::format("model.vocab = {}: the tokenizer in {} has {} tokens; set "
                                "model.vocab >= {}",
                                cfg.model.vocab, cfg.data.dir, ctx.train_split->vocab_size(),
                                ctx.train_split->vocab_size()));
  if (ctx.world_rank == 0)
    ctx.tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::load(cfg.data.dir + "/tokenizer.h5"));
  if (!ctx.opt.resume && ctx.world_rank == 0 && newest_checkpoint(ctx.ckpt_dir))
    throw UserError(fmt::format("{} already holds checkpoints: pass --resume to continue that "
                                "run, or choose another --out",
                                ctx.ckpt_dir));
}

// Rank 0 creates the run folder and writes the resolved config; a folder that cannot be
// written (read-only, missing mount, not a folder) is a user error naming it.
void create_run_folder(const RunContext& ctx) {
  if (ctx.world_rank != 0) return;
  try {
    fs::create_directories(ctx.run_dir + "/logs");
    fs::create_directories(ctx.ckpt_dir);
    save_config(ctx.cfg, ctx.run_dir + "/config.toml");
  } catch (const fs::filesystem_error& e) {
    throw UserError(fmt::format("--out {}: cannot create the run folder there ({})", ctx.run_dir,
                                e.code().message()));
  }
}

}  // namespace

RunContext::RunContext(const Config& c, const TrainOptions& o)
    : cfg(c), opt(o), world(o.world), world_rank(rank_of(o.world)), world_size(size_of(o.world)),
      topo(Topology::make(c.topology.islands, c.topology.ranks_per_island, c.topology.syncers,
                          c.topology.expert_workers, world_rank, world_size)),
      run_dir(o.run_dir), ckpt_dir(o.run_dir + "/checkpoints"), world_comm(o.world, stats),
      p2p(MPI_COMM_NULL, stats) {
  topo.pipeline_stages = c.topology.pipeline_stages;
}

std::unique_ptr<RunContext> open_run(const Config& cfg, const TrainOptions& opt) {
  auto ctx = std::make_unique<RunContext>(cfg, opt);
  set_wait_deadline(cfg.sync.timeout_s, ctx->world_rank);
  on_all_ranks(ctx->world_comm, [&] { check_inputs(*ctx); });
  // a resume that is refused writes nothing (not even config.toml)
  if (opt.resume) ctx->resume_from = agreed_checkpoint(ctx->world_comm, ctx->ckpt_dir);
  if (!ctx->resume_from.empty())
    on_all_ranks(ctx->world_comm, [&] { check_resume_compatible(ctx->resume_from, cfg); });
  on_all_ranks(ctx->world_comm, [&] { create_run_folder(*ctx); });
  ctx->log = make_logger(ctx->run_dir, ctx->world_rank, ctx->world_rank == 0 && !opt.quiet);
  ctx->comms = Communicators::split(ctx->topo, ctx->world);
  ctx->p2p = Comm(ctx->comms.p2p, ctx->stats);
  return ctx;
}

}  // namespace px
