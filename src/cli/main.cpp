// parallax: the one binary (DESIGN §8). Subcommands: data prepare, train, sample, eval, plan, inspect, config.
// Bad user input (UserError) prints one message and exits with code 2.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>

#include "cli/commands.hpp"  // defines: cmd_data_prepare, cmd_train, cmd_sample, cmd_config
#include "util/errors.hpp"   // defines: UserError

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);

  CLI::App app{"parallax: train Mixture-of-Experts language models across loosely connected "
               "participants"};
  app.require_subcommand(1);

  auto* data = app.add_subcommand("data", "Data preparation");
  data->require_subcommand(1);
  auto* prep = data->add_subcommand("prepare", "Train a byte-level BPE and write HDF5 token shards");
  std::vector<std::string> inputs;
  std::string out_dir;
  int vocab = 2048;
  prep->add_option("--input", inputs, "Text files or directories")->required()->expected(1, -1);
  prep->add_option("--out", out_dir, "Output directory")->required();
  prep->add_option("--vocab", vocab, "Vocabulary size (>= 256)");

  auto* tr = app.add_subcommand("train", "Train a model");
  std::string cfg_path, run_dir;
  bool resume = false;
  std::vector<std::string> overrides;
  tr->add_option("config", cfg_path, "TOML config")->required();
  tr->add_option("--out", run_dir, "Run directory (default runs/<config name>)");
  tr->add_flag("--resume", resume, "Continue from the newest complete checkpoint in the run dir");
  tr->add_option("overrides", overrides, "section.key=value overrides, applied after the file");

  auto* sm = app.add_subcommand("sample", "Generate text from a checkpoint");
  std::string ckpt, prompt;
  int n_tokens = 100;
  double temperature = 0.8;
  uint64_t seed = 1;
  sm->add_option("checkpoint", ckpt, "Checkpoint file (RUNDIR/checkpoints/step_*.h5)")->required();
  sm->add_option("--prompt", prompt, "Prompt text")->required();
  sm->add_option("--tokens", n_tokens, "Tokens to generate");
  sm->add_option("--temperature", temperature, "Sampling temperature (0 = greedy)");
  sm->add_option("--seed", seed, "Sampling seed");

  auto* ev = app.add_subcommand("eval", "Validation loss of the model a run produces (global backbone + masters)");
  std::string ev_path, ev_data;
  int ev_batches = 0;
  bool ev_json = false, ev_assembled_only = false;
  ev->add_option("checkpoint", ev_path, "Checkpoint file, or a run folder (its newest checkpoint)")->required();
  ev->add_option("--data", ev_data, "Data folder with val.h5 (default: the run's data.dir)");
  ev->add_option("--batches", ev_batches, "Validation batches (default: the run's data.eval_batches)");
  ev->add_flag("--json", ev_json, "Print one JSON object");
  ev->add_flag("--assembled-only", ev_assembled_only,
               "Skip the second pass (island 0's backbone + masters): half the time");

  auto* pl = app.add_subcommand("plan", "Memory, FLOPs and bytes per role for a config (no training)");
  std::string plan_cfg;
  int plan_ranks = 0;
  bool plan_json = false;
  std::vector<std::string> plan_ov;
  pl->add_option("config", plan_cfg, "TOML config")->required();
  pl->add_option("--ranks", plan_ranks, "Check the topology against this world size");
  pl->add_flag("--json", plan_json, "Print one JSON object (per role: memory by kind, bytes per tier)");
  pl->add_option("overrides", plan_ov, "section.key=value overrides");

  auto* insp = app.add_subcommand("inspect", "Summarise a checkpoint, metrics, shard or tokenizer file");
  std::string insp_path;
  insp->add_option("file", insp_path, "HDF5 file")->required();

  auto* cf = app.add_subcommand("config", "Validate a config and show it resolved");
  std::string cfg2;
  bool print = false;
  std::vector<std::string> overrides2;
  cf->add_option("config", cfg2, "TOML config")->required();
  cf->add_flag("--print", print, "Print the resolved config");
  cf->add_option("overrides", overrides2, "section.key=value overrides");

  int rc = 0;
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      rc = app.exit(e);
      if (rc != 0) rc = 2;
      MPI_Finalize();
      return rc;
    }
    if (prep->parsed()) rc = px::cmd_data_prepare(inputs, out_dir, vocab);
    else if (tr->parsed()) rc = px::cmd_train(cfg_path, run_dir, resume, overrides);
    else if (sm->parsed()) rc = px::cmd_sample(ckpt, prompt, n_tokens, temperature, seed);
    else if (cf->parsed()) rc = px::cmd_config(cfg2, overrides2, print);
    else if (insp->parsed()) rc = px::cmd_inspect(insp_path);
    else if (ev->parsed()) rc = px::cmd_eval(ev_path, ev_data, ev_batches, ev_json, !ev_assembled_only);
    else if (pl->parsed()) rc = px::cmd_plan(plan_cfg, plan_ranks, plan_ov, plan_json);
  } catch (const px::UserError& e) {
    if (rank == 0) fmt::print(stderr, "parallax: error: {}\n", e.what());
    rc = 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "parallax: internal error on rank {}: {}\n", rank, e.what());
    // the other ranks may be waiting for this one in a collective: end the whole job
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
