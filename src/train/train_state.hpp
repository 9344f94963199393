#pragma once
// Everything a checkpoint holds for a one-rank run, and how to write and restore it
// (DESIGN §8): config, step, data position, parameters, AdamW moments, router bias,
// tokenizer merges (so `parallax sample` needs only the checkpoint).
#include <cstdint>
#include <string>

#include "config/config.hpp"         // defines: Config
#include "data/bpe_tokenizer.hpp"    // defines: BpeTokenizer
#include "model/moe_model.hpp"       // defines: MoeModel
#include "optim/adamw.hpp"           // defines: AdamW

namespace px {

struct TrainState {
  MoeModel<float>& model;
  AdamW& opt;
  int64_t step = 0;         // steps completed
  int64_t data_cursor = 0;  // TokenLoader position
  int64_t tokens = 0;       // tokens trained on so far
};

// Writes RUNDIR/checkpoints/step_XXXXXXXX.h5 (temporary name, then rename) and prunes.
std::string save_checkpoint(const std::string& ckpt_dir, const Config& cfg, const TrainState& st,
                            const BpeTokenizer& tok, int keep);
// Restores st from a checkpoint written for the same model shape; a mismatch (another
// config's checkpoint) throws UserError naming the file and what differs.
void load_checkpoint(const std::string& path, const Config& cfg, TrainState& st);
// The config stored in a checkpoint (for `parallax sample`).
Config checkpoint_config(const std::string& path);
BpeTokenizer checkpoint_tokenizer(const std::string& path);

}  // namespace px
