#pragma once
// Where every parameter tensor lives. Parameters sit in two arenas:
//  - backbone: embedding, norms, attention, dense FFNs, routers, shared experts, head;
//  - experts:  the routed experts, [moe_layer][expert] blocks, so a later issue can keep
//              only some experts (their homes) in full precision.
// The layout is a pure function of the ModelConfig.
#include <cstddef>
#include <string>
#include <vector>

#include "model/model_config.hpp"  // defines: ModelConfig

namespace px {

enum class Arena { BACKBONE = 0, EXPERTS = 1 };
// "backbone" / "experts" (checkpoint dataset names).
inline const char* arena_name(Arena a) { return a == Arena::BACKBONE ? "backbone" : "experts"; }

// Elements [lo, hi) of an arena.
struct ArenaSpan {
  size_t lo = 0, hi = 0;
  size_t size() const { return hi - lo; }
};

struct ParamSpec {
  std::string name;         // e.g. "layers.1.attn.wq"
  std::vector<int> shape;   // [in, out] for matrices
  Arena arena;
  size_t offset;            // element offset inside its arena
  size_t size;              // number of elements
  bool decay;               // weight decay applies (matrices only)
  double init_std;          // 0 => init to one (norm gains)
};

// Offsets of one layer's tensors (element offsets into the arenas).
struct LayerOffsets {
  size_t attn_g, wq, wk, wv, wo, ffn_g;         // backbone
  size_t dense_w1, dense_w3, dense_w2;           // backbone (dense layers)
  size_t router, shared_w1, shared_w3, shared_w2;  // backbone (MoE layers); shared [S, d, h]
  size_t expert_w1, expert_w3, expert_w2;        // experts arena (MoE layers): [E, d, h]
};

struct ParamLayout {
  std::vector<ParamSpec> specs;
  std::vector<LayerOffsets> layers;
  size_t embed = 0, final_g = 0, head = 0;
  size_t backbone_size = 0, experts_size = 0;
  int first_moe_layer = 0;  // (model.dense_layers)

  explicit ParamLayout(const ModelConfig& c);
  size_t size(Arena a) const { return a == Arena::BACKBONE ? backbone_size : experts_size; }
  // The contiguous elements of arena a that belong to layers [layer_begin, layer_end) (a
  // pipeline stage): in the backbone with the embedding when layer_begin = 0 and the final
  // norm and head when layer_end = n_layers; in the experts arena those layers' experts.
  ArenaSpan layers_span(Arena a, int layer_begin, int layer_end) const;
};

}  // namespace px
