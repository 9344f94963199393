#pragma once
// Homes of the routed experts in mode `parallax` (DESIGN §3): every routed expert has exactly
// one home, a pure function of the config and topology that every rank computes without
// talking. Experts are named (m, e): m is the index among the MoE layers (0-based, dense
// layers not counted), e the expert; the global index is g = m * E + e.
//   W = 0: island e mod I; inside it, the island's experts taken in (m, e) order are dealt
//          round-robin to its R ranks (so every rank homes about M * E / (I * R) of them).
//   W > 0: expert worker g mod W.
#include <vector>

#include "parallel/topology.hpp"  // defines: Topology

namespace px {

struct ExpertId {
  int moe_layer = 0;
  int expert = 0;
  bool operator==(const ExpertId&) const = default;
};

// World rank of the home of expert (m, e) for a model with E routed experts per MoE layer.
// Throws std::invalid_argument when m < 0 or e is outside [0, E).
int expert_home(const Topology& topo, int moe_layer, int expert, int n_experts);

// The experts homed at world rank `rank`, in (m, e) order (empty for syncers, and for
// learners when W > 0).
std::vector<ExpertId> experts_homed_at(const Topology& topo, int rank, int moe_layers,
                                       int n_experts);

}  // namespace px
