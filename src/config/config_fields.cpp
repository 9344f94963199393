// The field table: the single list of config fields, their types, ranges and comments.
#include "config/config_fields.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "util/errors.hpp"  // defines: UserError

namespace px::cfg {
namespace {

constexpr double kMaxInt = std::numeric_limits<int>::max();

// Builds a descriptor for member `m` of section struct `s` of Config; the field type follows
// the member's C++ type (int/int64 -> INT, double -> FLOAT, bool, string, enum -> CHOICE).
template <class S, class T>
FieldDesc field(const char* section, const char* key, S Config::*s, T S::*m, Bound lo, Bound hi,
                const char* help) {
  FieldDesc f;
  f.section = section;
  f.key = key;
  f.lo = std::move(lo);
  f.hi = std::move(hi);
  f.help = help;
  const std::string name = f.name();
  if constexpr (std::is_same_v<T, bool>) {
    f.type = FieldType::BOOL;
    f.get = [s, m](const Config& c) { return FieldValue{c.*s.*m}; };
    f.set = [s, m](Config& c, const FieldValue& v) { c.*s.*m = std::get<bool>(v); };
  } else if constexpr (std::is_integral_v<T>) {
    f.type = FieldType::INT;
    f.get = [s, m](const Config& c) { return FieldValue{static_cast<int64_t>(c.*s.*m)}; };
    f.set = [s, m, name](Config& c, const FieldValue& v) {
      const int64_t x = std::get<int64_t>(v);
      if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max())
        throw UserError(fmt::format("{} = {}: out of range for a {}-bit integer", name, x,
                                    8 * sizeof(T)));
      c.*s.*m = static_cast<T>(x);
    };
  } else if constexpr (std::is_floating_point_v<T>) {
    f.type = FieldType::FLOAT;
    f.get = [s, m](const Config& c) { return FieldValue{static_cast<double>(c.*s.*m)}; };
    f.set = [s, m](Config& c, const FieldValue& v) { c.*s.*m = std::get<double>(v); };
  } else if constexpr (std::is_same_v<T, std::string>) {
    f.type = FieldType::STRING;
    f.get = [s, m](const Config& c) { return FieldValue{c.*s.*m}; };
    f.set = [s, m](Config& c, const FieldValue& v) { c.*s.*m = std::get<std::string>(v); };
  } else {
    static_assert(std::is_enum_v<T>, "unsupported config field type");
    f.type = FieldType::CHOICE;
    f.choices.assign(EnumNames<T>::v.begin(), EnumNames<T>::v.end());
    f.get = [s, m](const Config& c) { return FieldValue{std::string(to_string(c.*s.*m))}; };
    f.set = [s, m, name](Config& c, const FieldValue& v) {
      const auto& str = std::get<std::string>(v);
      const auto& names = EnumNames<T>::v;
      auto it = std::find(names.begin(), names.end(), str);
      if (it == names.end()) {
        std::string allowed;
        for (auto n : names) allowed += fmt::format("{}\"{}\"", allowed.empty() ? "" : ", ", n);
        throw UserError(fmt::format("{} = \"{}\": must be one of {}", name, str, allowed));
      }
      c.*s.*m = static_cast<T>(it - names.begin());
    };
  }
  return f;
}

std::vector<FieldDesc> build_table() {
  using C = Config;
  using M = ModelConfig;
  using T = TrainConfig;
  using D = DataConfig;
  using P = TopologyConfig;
  using S = SyncConfig;
  using X = ExpertsConfig;
  using K = SketchConfig;
  using Q = CheckpointConfig;
  using L = LogConfig;
  const double big = 1e15;  // "no practical upper limit" for int64 counters
  return {
      // ---- [model]
      field("model", "d_model", &C::model, &M::d_model, ge(1), le(65536), "width of the residual stream"),
      field("model", "n_layers", &C::model, &M::n_layers, ge(1), le(1024), "transformer layers"),
      field("model", "n_heads", &C::model, &M::n_heads, ge(1), le_field("model.d_model"), "attention heads (d_model / n_heads = head_dim, even)"),
      field("model", "vocab", &C::model, &M::vocab, ge(256), le(1 << 24), "vocabulary size (256 = raw bytes)"),
      field("model", "seq_len", &C::model, &M::seq_len, ge(2), le(1 << 20), "tokens per training sequence"),
      field("model", "dense_layers", &C::model, &M::dense_layers, ge(0), le_field("model.n_layers"), "leading layers with a dense SwiGLU FFN"),
      field("model", "n_experts", &C::model, &M::n_experts, ge(1), le(65536), "routed experts per MoE layer"),
      field("model", "top_k", &C::model, &M::top_k, ge(1), le_field("model.n_experts"), "routed experts per token"),
      field("model", "n_shared", &C::model, &M::n_shared, ge(0), le(64), "shared (always-on) experts per MoE layer"),
      field("model", "expert_hidden", &C::model, &M::expert_hidden, ge(1), le(1 << 20), "hidden width of every expert"),
      field("model", "dense_hidden", &C::model, &M::dense_hidden, ge(1), le(1 << 22), "hidden width of the dense FFN layers"),
      field("model", "expert_act", &C::model, &M::expert_act, none(), none(), "expert FFN: swiglu | relu2"),
      field("model", "aux_alpha", &C::model, &M::aux_alpha, ge(0), le(1), "Switch load-balancing loss coefficient (balance = aux)"),
      field("model", "balance", &C::model, &M::balance, none(), none(), "load balancing: aux (loss) | bias (aux-loss-free)"),
      field("model", "bias_gamma", &C::model, &M::bias_gamma, ge(0), le(1), "bias step per update (balance = bias)"),
      // ---- [train]
      field("train", "mode", &C::train, &T::mode, none(), none(), "sync | diloco | parallax"),
      field("train", "device", &C::train, &T::device, none(), none(), "cpu | cuda | staged (a test backend: CPU compute on a private copy of the state, copied to and from the host only at the declared sync points)"),
      field("train", "steps", &C::train, &T::steps, ge(1), le(big), "optimizer steps per island"),
      field("train", "batch_size", &C::train, &T::batch_size, ge(1), le(1 << 20), "sequences per step per island rank"),
      field("train", "micro_batches", &C::train, &T::micro_batches, ge(1), le(1 << 20), "micro-batches per step (gradient accumulation; must divide batch_size): activations are held for batch_size / micro_batches sequences"),
      field("train", "zero", &C::train, &T::zero, ge(0), le(1), "ZeRO stage: 0 (every rank holds the AdamW moments) | 1 (each rank of the data-parallel group holds its 1/D shard: gradients reduce-scattered, parameters all-gathered)"),
      field("train", "recompute", &C::train, &T::recompute, none(), none(), "recomputation in the backward, bit-identical: none | attention (one layer's attention probabilities are held, each layer's recomputed from q and k) | experts (also the routed experts' hidden activations, from their inputs) | layers (each layer keeps its input alone and its backward runs its forward again: one layer's activations are held)"),
      field("train", "lr", &C::train, &T::lr, gt(0), le(10), "peak learning rate (AdamW)"),
      field("train", "warmup_steps", &C::train, &T::warmup_steps, ge(0), le_field("train.steps"), "linear warmup steps, then cosine decay"),
      field("train", "min_lr", &C::train, &T::min_lr, ge(0), le_field("train.lr"), "learning rate at the end of the decay"),
      field("train", "weight_decay", &C::train, &T::weight_decay, ge(0), le(1), "AdamW decoupled weight decay"),
      field("train", "grad_clip", &C::train, &T::grad_clip, ge(0), le(1e6), "clip the global gradient norm to this (0 = off)"),
      field("train", "seed", &C::train, &T::seed, ge(0), le(9.0e18), "seed of every random stream"),
      field("train", "max_skipped_steps", &C::train, &T::max_skipped_steps, ge(1), le(kMaxInt), "consecutive steps with a non-finite loss or gradient norm (each skipped) after which the run stops as diverged"),
      field("train", "deterministic", &C::train, &T::deterministic, none(), none(), "bit-reproducible runs"),
      field("train", "optimizer", &C::train, &T::optimizer, none(), none(), "inner optimizer: adamw | sgd (plain SGD, for equivalence checks)"),
      // ---- [data]
      field("data", "dir", &C::data, &D::dir, none(), none(), "output folder of `parallax data prepare`"),
      field("data", "eval_every", &C::data, &D::eval_every, ge(0), le(big), "steps between validation passes (0 = never)"),
      field("data", "eval_batches", &C::data, &D::eval_batches, ge(1), le(1 << 20), "batches per validation pass"),
      field("data", "eval_without_routed", &C::data, &D::eval_without_routed, none(), none(), "validation also without the routed experts' outputs (ablation: /eval/loss_without_routed)"),
      // ---- [topology]
      field("topology", "islands", &C::topology, &P::islands, ge(1), le(1 << 16), "islands (groups of ranks with their own data)"),
      field("topology", "ranks_per_island", &C::topology, &P::ranks_per_island, ge(1), le(1 << 16), "ranks per island"),
      field("topology", "syncers", &C::topology, &P::syncers, ge(0), le(1 << 16), "syncer ranks (backbone_sync = syncer)"),
      field("topology", "expert_workers", &C::topology, &P::expert_workers, ge(0), le(1 << 20), "expert-worker ranks (homes of routed experts)"),
      field("topology", "pipeline_stages", &C::topology, &P::pipeline_stages, ge(1), le_field("model.n_layers"), "pipeline stages per island (1F1B over train.micro_batches)"),
      field("topology", "pipeline_split", &C::topology, &P::pipeline_split, none(), none(), "which layers each pipeline stage holds: even (L / P each) | ends (the embedding and the head count as one layer each: the first and last stages hold fewer)"),
      // ---- [sync]
      field("sync", "island_every", &C::sync, &S::island_every, ge(1), le(kMaxInt), "steps between gradient all-reduces inside an island"),
      field("sync", "backbone_every", &C::sync, &S::backbone_every, ge(1), le(kMaxInt), "inner steps between backbone syncs (DiLoCo H)"),
      field("sync", "backbone_sync", &C::sync, &S::backbone_sync, none(), none(), "allreduce | syncer"),
      field("sync", "quorum", &C::sync, &S::quorum, ge(0), le_field("topology.islands"), "islands a syncer waits for (0 = all)"),
      field("sync", "grace_steps", &C::sync, &S::grace_steps, ge(0), le(kMaxInt), "steps a syncer waits for late islands after the quorum"),
      field("sync", "timeout_s", &C::sync, &S::timeout_s, ge(0), le(1e7), "seconds a rank waits for another before it ends the job with a message (0 = no deadline)"),
      field("sync", "mix_alpha", &C::sync, &S::mix_alpha, ge(0), le(1), "weight of the local backbone when mixing in the global one"),
      field("sync", "merge", &C::sync, &S::merge, none(), none(), "mean | rda (radial-directional averaging)"),
      field("sync", "fragments", &C::sync, &S::fragments, ge(1), le_field("model.n_layers"), "backbone fragments synced at staggered steps"),
      field("sync", "outer_lr", &C::sync, &S::outer_lr, gt(0), le(10), "outer (Nesterov) learning rate"),
      field("sync", "outer_momentum", &C::sync, &S::outer_momentum, ge(0), lt(1), "outer Nesterov momentum"),
      field("sync", "outer_dtype", &C::sync, &S::outer_dtype, none(), none(), "outer-gradient wire format: fp32 | bf16 | int8 | fp4 | ternary"),
      // ---- [experts]
      field("experts", "signal", &C::experts, &X::signal, none(), none(), "how remote experts learn: sketches | adapters | none (no signal between islands: with view full the SPES-style baseline, each home trains its experts from its own island's tokens; with other views the frozen-experts baseline, routed experts never train)"),
      field("experts", "view", &C::experts, &X::view, none(), none(), "view of a non-owned expert: ternary | lowrank | full (an fp32 copy of its home's master, refreshed every snapshot_every steps)"),
      field("experts", "adapter_rank", &C::experts, &X::adapter_rank, ge(0), le_field("model.expert_hidden"), "trainable adapter rank on views (0 = frozen view)"),
      field("experts", "surrogate_rank", &C::experts, &X::surrogate_rank, ge(1), le_field("model.expert_hidden"), "rank of the low-rank surrogate (view = lowrank)"),
      field("experts", "update_rank", &C::experts, &X::update_rank, ge(1), le_field("model.expert_hidden"), "rank of adapter deltas and surrogate updates"),
      field("experts", "adapter_every", &C::experts, &X::adapter_every, ge(1), le(kMaxInt), "steps between adapter-delta sends"),
      field("experts", "snapshot_every", &C::experts, &X::snapshot_every, ge(1), le(kMaxInt), "steps between snapshots (view ternary or full)"),
      field("experts", "surrogate_every", &C::experts, &X::surrogate_every, ge(1), le(kMaxInt), "steps between surrogate updates"),
      field("experts", "expert_update_every", &C::experts, &X::expert_update_every, ge(1), le(kMaxInt), "steps between a home's expert updates"),
      field("experts", "sketch_every", &C::experts, &X::sketch_every, ge(1), le(kMaxInt), "steps between sketches (signal = sketches)"),
      field("experts", "private_layers", &C::experts, &X::private_layers, ge(0), le_field("model.dense_layers"), "leading dense layers that send nothing off the island"),
      field("experts", "sparsity_2of8", &C::experts, &X::sparsity_2of8, none(), none(), "2-of-8 structured sparsity in ternary snapshots"),
      field("experts", "ternary_native", &C::experts, &X::ternary_native, none(), none(), "routed experts compute with the ternary form of their masters everywhere (latent fp32 masters, straight-through gradients); view = ternary"),
      field("experts", "home_device", &C::experts, &X::home_device, none(), none(), "where an expert home's masters, gradient sum and AdamW live and its sketch gradients run: cpu | cuda | staged (tests)"),
      // ---- [sketch]
      field("sketch", "tokens", &C::sketch, &K::tokens, ge(1), le(1 << 24), "tokens sampled per expert per step"),
      field("sketch", "dtype", &C::sketch, &K::dtype, none(), none(), "int8 | fp8 | bf16"),
      field("sketch", "max_staleness", &C::sketch, &K::max_staleness, ge(0), le(kMaxInt), "steps after which a home drops a sketch"),
      // ---- [checkpoint]
      field("checkpoint", "every", &C::checkpoint, &Q::every, ge(0), le(big), "steps between checkpoints (0 = only at the end)"),
      field("checkpoint", "keep", &C::checkpoint, &Q::keep, ge(0), le(kMaxInt), "newest checkpoints kept (0 = all)"),
      // ---- [log]
      field("log", "every", &C::log, &L::every, ge(1), le(kMaxInt), "steps between log lines and metrics rows"),
  };
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

const std::vector<FieldDesc>& config_fields() {
  static const std::vector<FieldDesc> table = build_table();
  return table;
}

const std::vector<std::string>& config_sections() {
  static const std::vector<std::string> sections = [] {
    std::vector<std::string> out;
    for (const auto& f : config_fields())
      if (out.empty() || out.back() != f.section) out.push_back(f.section);
    return out;
  }();
  return sections;
}

const FieldDesc* find_field(std::string_view name) {
  for (const auto& f : config_fields())
    if (f.name() == name) return &f;
  return nullptr;
}

double numeric_value(const FieldDesc& f, const Config& c) {
  FieldValue v = f.get(c);
  if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* b = std::get_if<bool>(&v)) return *b ? 1.0 : 0.0;
  return 0.0;
}

std::string format_value(const FieldValue& v) {
  if (auto* i = std::get_if<int64_t>(&v)) return fmt::format("{}", *i);
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto* d = std::get_if<double>(&v)) {
    std::string s = fmt::format("{}", *d);  // shortest representation that round-trips
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it a TOML float
    return s;
  }
  std::string out = "\"";
  for (char ch : std::get<std::string>(v)) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f)
          out += fmt::format("\\u{:04X}", static_cast<unsigned char>(ch));
        else
          out += ch;
    }
  }
  return out + "\"";
}

std::string closest_field(std::string_view name) {
  std::string best;
  size_t best_d = 3;  // suggest only within 2 edits
  for (const auto& f : config_fields()) {
    size_t d = edit_distance(name, f.name());
    if (d < best_d) best_d = d, best = f.name();
  }
  return best;
}

std::string type_description(const FieldDesc& f) {
  switch (f.type) {
    case FieldType::INT: return "an integer";
    case FieldType::FLOAT: return "a number";
    case FieldType::BOOL: return "true or false";
    case FieldType::STRING: return "a string";
    case FieldType::CHOICE: {
      std::string s = "one of ";
      for (size_t i = 0; i < f.choices.size(); ++i)
        s += fmt::format("{}\"{}\"", i ? ", " : "", f.choices[i]);
      return s;
    }
  }
  return "?";
}

}  // namespace px::cfg
