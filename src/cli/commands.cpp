// Subcommand bodies of the parallax binary.
#include "cli/commands.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "config/config.hpp"      // defines: load_config, config_to_toml
#include "data/prepare.hpp"       // defines: data_prepare
#include "io/inspect.hpp"         // defines: inspect_h5
#include "train/plan.hpp"         // defines: make_plan, format_plan
#include "model/moe_model.hpp"    // defines: MoeModel
#include "checkpoint/resume.hpp"  // defines: checkpoint_config, checkpoint_tokenizer, load_model_params
#include "train/assembled_eval.hpp"  // defines: evaluate_checkpoint
#include "train/trainer.hpp"      // defines: train
#include "util/errors.hpp"        // defines: UserError

namespace px {

namespace fs = std::filesystem;

int cmd_data_prepare(const std::vector<std::string>& inputs, const std::string& out_dir, int vocab) {
  data_prepare(inputs, out_dir, vocab);
  return 0;
}

int cmd_train(const std::string& config_path, std::string run_dir, bool resume,
              const std::vector<std::string>& overrides) {
  const Config cfg = load_config(config_path, overrides);
  if (run_dir.empty()) run_dir = "runs/" + fs::path(config_path).stem().string();
  TrainOptions opt;
  opt.run_dir = run_dir;
  opt.resume = resume;
  install_preemption_handler();
  const TrainResult r = train(cfg, opt);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0 && !r.evals.empty())
    fmt::print("final validation loss {:.4f} (at step {}: {:.4f})\nmetrics: {}/metrics.h5, "
               "{}/metrics.jsonl\ncheckpoints: {}/checkpoints\n",
               r.evals.back().second, r.evals.front().first, r.evals.front().second, run_dir,
               run_dir, run_dir);
  return 0;
}

int cmd_sample(const std::string& checkpoint, const std::string& prompt, int n_tokens,
               double temperature, uint64_t seed) {
  if (n_tokens < 1) throw UserError(fmt::format("--tokens = {}: must be at least 1", n_tokens));
  const Config cfg = checkpoint_config(checkpoint);
  const BpeTokenizer tok = checkpoint_tokenizer(checkpoint);
  const int T = cfg.model.seq_len, V = cfg.model.vocab;
  MoeModel<float> model(cfg.model, 1, T);
  load_model_params(checkpoint, model);
  std::vector<int32_t> ids = tok.encode(prompt);
  if (ids.empty()) ids.push_back('\n');
  std::mt19937_64 rng(seed);
  std::string out = prompt;
  for (int i = 0; i < n_tokens; ++i) {
    const int n = std::min<int>((int)ids.size(), T);
    const int32_t* ctx = ids.data() + ids.size() - n;
    model.forward(ctx, nullptr, 1, n);
    const float* l = model.logits() + (size_t)(n - 1) * V;
    int next = 0;
    if (temperature <= 0) {
      for (int v = 1; v < tok.vocab_size(); ++v)
        if (l[v] > l[next]) next = v;
    } else {
      std::vector<double> p(tok.vocab_size());
      double mx = l[0];
      for (int v = 1; v < tok.vocab_size(); ++v) mx = std::max<double>(mx, l[v]);
      for (int v = 0; v < tok.vocab_size(); ++v) p[v] = std::exp((l[v] - mx) / temperature);
      next = std::discrete_distribution<int>(p.begin(), p.end())(rng);
    }
    ids.push_back(next);
    out += tok.decode_token(next);
  }
  fmt::print("{}\n", out);
  return 0;
}

int cmd_eval(const std::string& path, const std::string& data_dir, int batches, bool json, bool island0) {
  const AssembledEval e = evaluate_checkpoint(path, data_dir, batches, island0);
  const std::string island0_json = island0 ? fmt::format("{:.6f}", e.loss_island0) : "null";
  const std::string island0_text =
      island0 ? fmt::format(" | island 0's backbone + masters {:.4f}", e.loss_island0) : "";
  if (json)
    fmt::print("{{\"step\": {}, \"loss\": {:.6f}, \"loss_island0\": {}, \"global_backbone\": {}, "
               "\"batches\": {}}}\n",
               e.step, e.loss, island0_json, e.global_backbone ? "true" : "false", e.batches);
  else
    fmt::print("step {} | validation loss {:.4f} ({} + every expert's master){} | {} batches\n",
               e.step, e.loss, e.global_backbone ? "global backbone" : "rank 0's backbone",
               island0_text, e.batches);
  return 0;
}

int cmd_plan(const std::string& config_path, int ranks, const std::vector<std::string>& overrides,
             bool json) {
  const Config cfg = load_config(config_path, overrides);
  const TopologyConfig& t = cfg.topology;
  const int want = t.islands * t.ranks_per_island + t.syncers + t.expert_workers;
  if (ranks > 0 && ranks != want)
    throw UserError(fmt::format("--ranks {} does not match [topology]: islands {} x "
                                "ranks_per_island {} + syncers {} + expert_workers {} = {}",
                                ranks, t.islands, t.ranks_per_island, t.syncers,
                                t.expert_workers, want));
  fmt::print("{}", json ? plan_json(make_plan(cfg)) : format_plan(cfg, make_plan(cfg)));
  return 0;
}

int cmd_inspect(const std::string& path) {
  fmt::print("{}", inspect_h5(path));
  return 0;
}

int cmd_config(const std::string& config_path, const std::vector<std::string>& overrides,
               bool print) {
  const Config cfg = load_config(config_path, overrides);
  check_supported(cfg);  // what `parallax train` would refuse, refused here too
  if (print) fmt::print("{}", config_to_toml(cfg));
  else fmt::print("{}: ok\n", config_path);
  return 0;
}

}  // namespace px
