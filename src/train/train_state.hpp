#pragma once
// What a checkpoint holds (DESIGN §8) and how every role writes and restores its part:
// learners (parameters, AdamW moments, router bias, step/data position/tokens, outer state:
// global backbone, outer momentum, error-feedback residuals; the expert range they hold in
// mode "sync"), syncers (global shards and outer momentum of their units), and rank 0 also
// the tokenizer merges and the resolved config, so `parallax sample` needs only the file.
#include <cstdint>
#include <string>

#include "config/config.hpp"               // defines: Config
#include "data/bpe_tokenizer.hpp"          // defines: BpeTokenizer
#include "io/checkpoint_parallel.hpp"      // defines: ParallelCheckpointWriter
#include "sync/expert_home.hpp"            // defines: ExpertHome
#include "sync/expert_views.hpp"           // defines: ExpertViews
#include "sync/outer_sync.hpp"             // defines: OuterSync, Syncer
#include "train/expert_adapters.hpp"       // defines: ExpertAdapters
#include "train/learner.hpp"               // defines: Learner

namespace px {

struct Progress {
  int64_t step = 0;         // steps completed
  int64_t data_cursor = 0;  // TokenLoader position
  int64_t tokens = 0;       // tokens trained on by all islands so far
  int64_t island_tokens = 0;  // tokens trained on by my island (outer-merge weights)
};

void add_learner_state(ParallelCheckpointWriter& w, Learner& L, OuterSync* outer,
                       const Progress& p);
void add_syncer_state(ParallelCheckpointWriter& w, Syncer& s);
// Mode parallax: an expert home's masters, pending gradient sum, AdamW moments and counters
// (learners that home experts and expert workers); `step` is the run's step (workers keep no
// other state). load_home_state returns that step.
void add_home_state(ParallelCheckpointWriter& w, ExpertHome& h, int64_t step);
int64_t load_home_state(const std::string& path, int rank, ExpertHome& h);
// Resuming mode parallax with another topology.expert_workers (all else equal; view
// "ternary", signal "sketches"): rehoming() says so (and throws UserError for the other view
// and signal kinds); load_home_state_rehomed takes each of h's experts (masters, pending
// gradient, AdamW moments) from its home in the checkpoint and returns the run's step;
// saved_topology is the checkpoint's topology seen from `rank`.
bool rehoming(const std::string& path, const Config& cfg);
int64_t load_home_state_rehomed(const std::string& path, ExpertHome& h, const ModelConfig& mc);
Topology saved_topology(const std::string& path, int rank);
// Mode parallax, adapter signal: a learner's adapters, their AdamW moments, token counts and
// step in the current cycle.
void add_adapter_state(ParallelCheckpointWriter& w, ExpertAdapters& a);
// Mode parallax: a learner's compact views of the experts homed elsewhere. With `rehome`, the
// experts this rank homed in the checkpoint and no longer does get views of those masters.
void add_view_state(ParallelCheckpointWriter& w, ExpertViews& v);
void load_view_state(const std::string& path, int rank, ExpertViews& v, bool rehome);
void load_adapter_state(const std::string& path, int rank, ExpertAdapters& a);
// Collective over world. Rank 0 adds the tokenizer; writes DIR/step_XXXXXXXX.h5 and prunes.
std::string commit_checkpoint(MPI_Comm world, ParallelCheckpointWriter& w, const std::string& dir,
                              const Config& cfg, int64_t step, const BpeTokenizer* tok, int keep);

// Throws UserError (naming the file and what differs) unless the checkpoint was written for
// the same [model] and [topology] (or a parallax run with another expert_workers: rehoming).
// Every rank calls it before loading, so all of them agree.
void check_resume_compatible(const std::string& path, const Config& cfg);
// Restores this rank's part; the checkpoint must pass check_resume_compatible.
void load_learner_state(const std::string& path, int rank, const Config& cfg, Learner& L,
                        OuterSync* outer, Progress& p);
void load_syncer_state(const std::string& path, int rank, Syncer& s);

Config checkpoint_config(const std::string& path);
BpeTokenizer checkpoint_tokenizer(const std::string& path);
// Parameters for inference: the backbone of rank 0, each routed expert from the rank that
// held it (mode "sync" shards experts over ranks).
void load_model_params(const std::string& path, MoeModel<float>& model);

}  // namespace px
