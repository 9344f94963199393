#pragma once
// Which layers each stage of a pipelined island holds (topology.pipeline_stages,
// topology.pipeline_split), in one place for every role that needs it: the learner's stage
// model, its routed experts and views, the syncer's units, the view messages' stage parts,
// checkpoints, the plan and the config checks.
#include <array>

#include "config/config.hpp"               // defines: Config
#include "model/param_layout.hpp"          // defines: ParamLayout, ArenaSpan
#include "parallel/pipeline_schedule.hpp"  // defines: pipeline_layer_begin, MoeLayerRange
#include "parallel/topology.hpp"           // defines: Topology

namespace px {

struct LayerRange {
  int begin = 0, end = 0;  // layers [begin, end)
};

class PipelineSplit {
 public:
  explicit PipelineSplit(const Config& c)
      : stages_(c.topology.pipeline_stages), n_layers_(c.model.n_layers),
        dense_(c.model.dense_layers), ends_(c.topology.split_ends()) {}
  int stages() const { return stages_; }
  LayerRange layers(int stage) const {
    return {pipeline_layer_begin(stage, stages_, n_layers_, ends_),
            pipeline_layer_begin(stage + 1, stages_, n_layers_, ends_)};
  }
  // The spans of the backbone and experts arenas stage `stage` holds (experts = false: none of
  // the experts arena, mode parallax's homes own them).
  std::array<ArenaSpan, 2> spans(const ParamLayout& layout, int stage, bool experts) const {
    const LayerRange l = layers(stage);
    return {layout.layers_span(Arena::BACKBONE, l.begin, l.end),
            experts ? layout.layers_span(Arena::EXPERTS, l.begin, l.end) : ArenaSpan{}};
  }
  MoeLayerRange moe_layers(int stage) const {
    return stage_moe_layers(stage, stages_, n_layers_, dense_, ends_);
  }
  // The MoE layers whose experts a rank runs and views: its stage's on a learner (all of them
  // unpipelined).
  MoeLayerRange held_moe_layers(const Topology& topo) const {
    return moe_layers(topo.is_learner() ? topo.stage() : 0);
  }

 private:
  int stages_, n_layers_, dense_;
  bool ends_;
};

}  // namespace px
