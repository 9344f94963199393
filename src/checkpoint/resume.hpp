#pragma once
// Reading checkpoints outside the components' own state: whether a checkpoint can resume this
// config (every rank checks before any loads), re-homing, the saved config, topology and
// tokenizer, and the parameters for inference.
#include <string>

#include "config/config.hpp"          // defines: Config
#include "data/bpe_tokenizer.hpp"     // defines: BpeTokenizer
#include "model/moe_model.hpp"        // defines: MoeModel
#include "parallel/topology.hpp"      // defines: Topology

namespace px {

// Throws UserError (naming the file and what differs) unless the checkpoint was written for
// the same [model] and [topology] (or a parallax run with another expert_workers: rehoming).
void check_resume_compatible(const std::string& path, const Config& cfg);
// Resuming mode parallax with another topology.expert_workers (all else equal; view
// "ternary", signal "sketches"; throws UserError for the other view and signal kinds).
bool rehoming(const std::string& path, const Config& cfg);
// The checkpoint's topology seen from `rank`.
Topology saved_topology(const std::string& path, int rank);

Config checkpoint_config(const std::string& path);
BpeTokenizer checkpoint_tokenizer(const std::string& path);
// Parameters for inference: the backbone of rank 0 (global_backbone: the global backbone of the
// last outer sync, from island 0's shards of outer/global, when the checkpoint has one), each routed expert from
// the rank that held it (mode "sync" shards experts over ranks; mode "parallax": from its
// home's master).
void load_model_params(const std::string& path, MoeModel<float>& model, bool global_backbone = false);
// Whether the checkpoint holds a global backbone (modes diloco and parallax).
bool has_global_backbone(const std::string& path);

}  // namespace px
