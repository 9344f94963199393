// libFuzzer target: one sketch bundle (wire/sketch_bundle.hpp) as a home receives it: split by
// parse_sketch_bundle (a malformed bundle is a std::runtime_error, the receiver's documented
// answer), then every sketch in it to SketchHome::receive, then the home's expert forward and
// backward; every gradient must stay finite.
#include <stdexcept>

#include "fuzz_receivers.hpp"      // defines: HomeFixture, PX_FUZZ_REQUIRE
#include "wire/sketch_bundle.hpp"  // defines: parse_sketch_bundle

using namespace px;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SketchBundle bundle;
  try {
    bundle = parse_sketch_bundle(data, size, 1);
  } catch (const std::runtime_error&) {
    return 0;
  }
  PX_FUZZ_REQUIRE(bundle.sketches.size() == bundle.header.count, "a bundle split into another count of sketches");
  fuzz::HomeFixture fx;
  for (const auto& s : bundle.sketches) {
    PX_FUZZ_REQUIRE(s.data() >= data && s.data() + s.size() <= data + size, "a sketch outside the bundle");
    fx.home.receive(s.data(), s.size(), fuzz::kHomeStep);
  }
  fx.home.accumulate();
  PX_FUZZ_REQUIRE(fx.gradients_finite(), "an accepted sketch made a gradient non-finite");
  return 0;
}
