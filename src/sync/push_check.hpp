#pragma once
// A syncer's checks of a backbone push (learner -> syncer, tag TAG_PUSH) before it trusts it:
// the header (wire/push_header.hpp) and the length, from the bytes as received, then the decoded
// values. Its own file so that the checks build without MPI's library or HDF5 (the fuzz targets,
// tests/fuzz/).
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "parallel/topology.hpp"  // defines: Topology
#include "sync/fragments.hpp"     // defines: FragmentPlan
#include "wire/push_header.hpp"   // defines: PushHeader

namespace px {

// What is wrong with a push of `bytes` bytes from world rank `source` that a syncer (index
// `syncer`) received (header fields in range, the unit is this syncer's, the sender is the
// learner of that island and shard, the length matches the shard and dtype); "" when nothing.
// plans: one per pipeline stage (topology.pipeline_stages; the shard's local rank r of R is
// rank r mod D of stage r / D, D = R / P, and its values are that stage's shard r mod D).
std::string push_problem(const uint8_t* msg, size_t bytes, int source, const Topology& topo,
                         std::span<const FragmentPlan> plans, int syncer);
inline std::string push_problem(const uint8_t* msg, size_t bytes, int source, const Topology& topo,
                                const FragmentPlan& plan, int syncer) {
  return push_problem(msg, bytes, source, topo, std::span<const FragmentPlan>(&plan, 1), syncer);
}

// The largest |value| of an accepted outer gradient: a parameter's change over one outer step
// is orders of magnitude below it, and the merge and the outer Nesterov step stay finite.
inline constexpr float kOuterGradientBound = 1e8f;

// What is wrong with the n decoded values of a push: "" when each is finite and within
// kOuterGradientBound, else the first one that is not ("value nan at index 96 ..."). The
// codecs' encoders refuse non-finite values, but bf16 and fp32 payloads decode any bits, and
// the scales of the quantized ones may be as large as a float. first_index: the index of
// values[0] in the push (checked a chunk at a time).
std::string push_values_problem(const float* values, size_t n, size_t first_index = 0);

}  // namespace px
