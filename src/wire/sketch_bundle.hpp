#pragma once
// Wire header of a sketch bundle (learner -> home, tag TAG_SKETCH, wire/mpi_tags.hpp): once per
// step and home, the header, then `count` sketches, each as a uint32 byte count + one sketch
// message (wire/sketch_wire.hpp). Little-endian, the in-memory layout (read with memcpy);
// 24 bytes, no padding. A bundle with count 0 still carries the flags.
//
// parse_sketch_bundle splits a received bundle into its header and its sketches (pointers into
// the caller's bytes, not yet verified: each goes to sketch_verify / SketchHome::receive).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace px {

// Bits of SketchBundleHeader::flags: the learners' decisions, for expert workers (which see no
// other traffic of the learners).
enum ExpertFlag : uint32_t { EXPERT_FLAG_CHECKPOINT = 1, EXPERT_FLAG_STOP = 2 };

struct SketchBundleHeader {
  uint32_t magic = 0x42535850u;  // "PXSB"
  uint32_t count = 0;            // sketches that follow, each as u32 bytes + a sketch message
  int64_t step = 0;
  uint32_t flags = 0;            // ExpertFlag bits
  uint32_t reserved = 0;
};
static_assert(sizeof(SketchBundleHeader) == 24);

struct SketchBundle {
  SketchBundleHeader header;
  std::vector<std::span<const uint8_t>> sketches;  // `count` of them, in order
};

// The bundle at data[0..size) from world rank `src` (named in messages). Throws
// std::runtime_error when it is shorter than its header, has another magic, when a sketch's
// length runs past the end ("sketch bundle from rank R truncated in sketch i of n") or when
// bytes are left after the last sketch.
SketchBundle parse_sketch_bundle(const uint8_t* data, size_t size, int src);

}  // namespace px
