#pragma once
// The subcommands of the parallax binary; each returns the process exit code and throws
// UserError for bad input.
#include <cstdint>
#include <string>
#include <vector>

namespace px {

int cmd_data_prepare(const std::vector<std::string>& inputs, const std::string& out_dir, int vocab);
int cmd_train(const std::string& config_path, std::string run_dir, bool resume,
              const std::vector<std::string>& overrides);
int cmd_sample(const std::string& checkpoint, const std::string& prompt, int n_tokens,
               double temperature, uint64_t seed);
int cmd_inspect(const std::string& path);
// The validation loss of the assembled model of a checkpoint or run folder (train/assembled_eval.hpp).
int cmd_eval(const std::string& path, const std::string& data_dir, int batches, bool json, bool island0);
int cmd_plan(const std::string& config_path, int ranks, const std::vector<std::string>& overrides,
             bool json);
int cmd_config(const std::string& config_path, const std::vector<std::string>& overrides,
               bool print);

}  // namespace px
