#pragma once
// The run configuration: one struct per TOML section (DESIGN §8). Field names are the contract
// that scripts and sweeps use: add fields freely, rename none.
//
// Every field is described once, in the field table (config_fields.cpp): parsing, overrides,
// printing (config_to_toml), equality and range validation all walk that one list.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/model_config.hpp"  // defines: ModelConfig, ExpertActKind, BalanceKind

namespace px {

// ---- enums of the string-valued fields. Enumerators are in the order of EnumNames<E>::v.
enum class TrainMode { SYNC, DILOCO, PARALLAX };
enum class DeviceKind { CPU, CUDA, STAGED };
enum class OptimizerKind { ADAMW, SGD };
enum class RecomputeKind { NONE, ATTENTION, EXPERTS, LAYERS };
enum class BackboneSyncKind { ALLREDUCE, SYNCER };
enum class MergeKind { MEAN, RDA };
enum class WireDtype { FP32, BF16, INT8, FP4, TERNARY };
enum class ExpertSignalKind { SKETCHES, ADAPTERS, NONE };
enum class ViewKind { TERNARY, LOWRANK, FULL };
enum class SketchDtype { INT8, FP8, BF16 };
enum class PipelineSplitKind { EVEN, ENDS };

// The TOML spelling of each enumerator, indexed by the enumerator's value.
template <class E> struct EnumNames;
template <> struct EnumNames<ExpertActKind> { static constexpr std::array<std::string_view, 2> v{"swiglu", "relu2"}; };
template <> struct EnumNames<BalanceKind> { static constexpr std::array<std::string_view, 2> v{"aux", "bias"}; };
template <> struct EnumNames<TrainMode> { static constexpr std::array<std::string_view, 3> v{"sync", "diloco", "parallax"}; };
template <> struct EnumNames<OptimizerKind> { static constexpr std::array<std::string_view, 2> v{"adamw", "sgd"}; };
template <> struct EnumNames<RecomputeKind> { static constexpr std::array<std::string_view, 4> v{"none", "attention", "experts", "layers"}; };
template <> struct EnumNames<PipelineSplitKind> { static constexpr std::array<std::string_view, 2> v{"even", "ends"}; };
template <> struct EnumNames<DeviceKind> { static constexpr std::array<std::string_view, 3> v{"cpu", "cuda", "staged"}; };
template <> struct EnumNames<BackboneSyncKind> { static constexpr std::array<std::string_view, 2> v{"allreduce", "syncer"}; };
template <> struct EnumNames<MergeKind> { static constexpr std::array<std::string_view, 2> v{"mean", "rda"}; };
template <> struct EnumNames<WireDtype> { static constexpr std::array<std::string_view, 5> v{"fp32", "bf16", "int8", "fp4", "ternary"}; };
template <> struct EnumNames<ExpertSignalKind> { static constexpr std::array<std::string_view, 3> v{"sketches", "adapters", "none"}; };
template <> struct EnumNames<ViewKind> { static constexpr std::array<std::string_view, 3> v{"ternary", "lowrank", "full"}; };
template <> struct EnumNames<SketchDtype> { static constexpr std::array<std::string_view, 3> v{"int8", "fp8", "bf16"}; };

// The TOML spelling of an enum value: to_string(TrainMode::SYNC) == "sync".
template <class E> constexpr std::string_view to_string(E e) { return EnumNames<E>::v[static_cast<int>(e)]; }

// [train] the optimisation loop of one island.
struct TrainConfig {
  TrainMode mode = TrainMode::SYNC;
  DeviceKind device = DeviceKind::CPU;
  int64_t steps = 1000;        // optimizer steps (per island)
  int batch_size = 8;          // sequences per step per island rank
  // Gradient accumulation: each step runs its batch as this many micro-batches of
  // batch_size / micro_batches sequences (activation memory is set by the micro-batch); the
  // gradient is their mean, the aux loss and sketches are per micro-batch.
  int micro_batches = 1;
  // ZeRO stage: 0 = every rank of the data-parallel group (the island; all learners in mode
  // sync) holds the whole AdamW state; 1 = each holds the moments of its 1/D of every
  // all-reduced arena (gradients reduce-scattered, updated parameters all-gathered).
  int zero = 0;
  // Recomputation in the backward (bit-identical): "attention" keeps one layer's attention
  // probabilities (shared by the layers) and recomputes each layer's from its q and k;
  // "experts" also the routed experts' hidden activations (x W1, x W3, act) from their inputs.
  RecomputeKind recompute = RecomputeKind::NONE;
  double lr = 3e-3;            // peak AdamW learning rate
  int64_t warmup_steps = 100;  // linear warmup, then cosine decay to min_lr
  double min_lr = 3e-4;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // global gradient-norm clip; 0 = off
  int64_t seed = 1234;
  bool deterministic = true;  // bit-reproducible runs (DESIGN §7)
  OptimizerKind optimizer = OptimizerKind::ADAMW;  // inner optimizer; sgd: equivalence tests
  // A step whose loss or gradient norm is not finite changes nothing (skipped, counted in
  // /train/skipped_steps); after this many in a row the run stops: it has diverged.
  int max_skipped_steps = 10;
};

// [data] the token shards written by `parallax data prepare`.
struct DataConfig {
  std::string dir;           // required: output folder of `parallax data prepare`
  int64_t eval_every = 100;  // steps between validation passes; 0 = never
  int eval_batches = 8;      // batches per validation pass
  // Each validation pass also without the routed experts' outputs (/eval/loss_without_routed):
  // how much the trained model relies on them.
  bool eval_without_routed = false;
};

// [topology] ranks and roles (DESIGN §3): world size = islands * ranks_per_island + syncers + expert_workers.
struct TopologyConfig {
  int islands = 1;
  int ranks_per_island = 1;
  int syncers = 0;
  int expert_workers = 0;
  // P: an island's ranks_per_island ranks form P pipeline stages (stage s holds layers
  // [s L / P, (s+1) L / P) of the L layers), micro-batches flowing through a 1F1B schedule.
  int pipeline_stages = 1;
  // Which layers each stage holds (parallel/pipeline_schedule.hpp: pipeline_layer_begin):
  // "even", or "ends" (the embedding and the head count as one layer each).
  PipelineSplitKind pipeline_split = PipelineSplitKind::EVEN;
  bool split_ends() const { return pipeline_split == PipelineSplitKind::ENDS; }
};

// [sync] cadences and rules of the tiers (DESIGN §5), counted in each island's own steps.
struct SyncConfig {
  int island_every = 1;     // steps between gradient all-reduces inside an island
  int backbone_every = 50;  // H: inner steps between backbone (DiLoCo) syncs
  BackboneSyncKind backbone_sync = BackboneSyncKind::ALLREDUCE;
  int quorum = 0;           // islands a syncer waits for before merging; 0 = all islands
  int grace_steps = 0;      // extra steps a syncer waits for late islands after the quorum
  double mix_alpha = 0.5;   // weight of the local backbone when mixing in the global one
  MergeKind merge = MergeKind::MEAN;
  int fragments = 1;        // backbone fragments synced at staggered steps
  double outer_lr = 0.7;
  double outer_momentum = 0.9;  // Nesterov momentum of the outer step
  WireDtype outer_dtype = WireDtype::FP32;
  // deadline of every blocking wait for another rank (parallel/wait_deadline.hpp); 0 = none
  double timeout_s = 1800;
};

// [experts] how remote experts learn and how views are refreshed (DESIGN §5, §6).
struct ExpertsConfig {
  ExpertSignalKind signal = ExpertSignalKind::SKETCHES;
  ViewKind view = ViewKind::TERNARY;
  int adapter_rank = 0;     // rank of the trainable adapter on a view; 0 = frozen view
  int surrogate_rank = 16;  // rank of the low-rank surrogate (view = lowrank)
  int update_rank = 8;      // rank of adapter deltas and surrogate updates
  int adapter_every = 10;   // steps between adapter-delta sends
  int snapshot_every = 50;  // steps between snapshots (ternary or full) of a home's experts
  int surrogate_every = 50; // steps between low-rank surrogate updates
  int expert_update_every = 1;  // steps between a home's AdamW updates of its experts
  int sketch_every = 1;     // steps between sketches (signal = sketches)
  int private_layers = 0;   // leading (dense) layers that never send sketches or adapters
  bool sparsity_2of8 = false;  // 2-of-8 structured sparsity in ternary snapshots
  // Ternary-native routed experts (BitNet b1.58-style): every forward of a routed expert, at
  // its home and on the islands, uses the ternary form of its fp32 master (the latent weight;
  // gradients pass straight through to it), so a view is the model, stale by at most
  // snapshot_every steps. Mode parallax, view "ternary".
  bool ternary_native = false;
  // Where an expert home keeps its masters, gradient sum and AdamW state and runs the sketches'
  // gradients and the update: "cpu"; "cuda" (an expert worker's GPU: the grouped expert FFN
  // over the sketch rows, AdamW on the device, the host copy refreshed after each update);
  // "staged" (tests: the same seam on a private CPU copy). Signal "sketches" or "none".
  DeviceKind home_device = DeviceKind::CPU;
};

// [sketch] the sketches sent to expert homes (DESIGN §7).
struct SketchConfig {
  int tokens = 64;  // at most this many tokens per expert per step
  SketchDtype dtype = SketchDtype::INT8;
  int max_staleness = 4;  // a home drops sketches older than this many steps
};

// [checkpoint]
struct CheckpointConfig {
  int64_t every = 1000;  // steps between checkpoints; 0 = only at the end
  int keep = 2;          // newest checkpoints kept; 0 = keep all
};

// [log]
struct LogConfig {
  int every = 10;  // steps between log lines / metrics rows
};

struct Config {
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  TopologyConfig topology;
  SyncConfig sync;
  ExpertsConfig experts;
  SketchConfig sketch;
  CheckpointConfig checkpoint;
  LogConfig log;
};

// Field-by-field equality (walks the field table).
bool operator==(const Config& a, const Config& b);

// Reads a TOML config, applies `section.key=value` overrides in order, then validates.
// Throws UserError naming the file (and line), field, value and what is allowed for a
// missing file, a TOML syntax error, an unknown section or key, a wrong type, a malformed or
// unknown override, or a value that fails validation.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Parses TOML text (as load_config, `source` names it in messages) and validates.
Config parse_config(const std::string& toml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

// Applies one `section.key=value` override (value parsed by the field's type; strings may be
// quoted). Does not validate. Throws UserError for a malformed override or an unknown key.
void apply_override(Config& cfg, const std::string& override_text);

// Range-checks every field and the cross-field rules. Throws UserError like
// "model.top_k = 12: must be between 1 and model.n_experts (8)".
void validate_config(const Config& cfg);

// Throws UserError for settings this release cannot run yet: this release trains on one
// rank (mode "sync", 1 island x 1 rank, no syncers or expert workers, device "cpu").
void check_supported(const Config& cfg);

// The resolved config as TOML: every field, by section, with a comment each. Re-parsable:
// parse_config(config_to_toml(c), ...) == c.
std::string config_to_toml(const Config& cfg);

// Writes config_to_toml(cfg) to `path` (through a temporary file renamed into place).
void save_config(const Config& cfg, const std::string& path);

// "section.key" of every field, in table order (for `parallax config --print`, tools, tests).
std::vector<std::string> config_field_names();

}  // namespace px
