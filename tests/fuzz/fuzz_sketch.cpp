// libFuzzer target: one sketch message (wire/sketch_wire.hpp) as a home receives it
// (SketchHome::receive: sketch_verify, sketch_unpack, the value bound), twice: as the bytes are,
// and with the checksum field recomputed so that the checks behind the checksum see arbitrary
// headers and payloads too. Accepted rows then go through the home's expert forward and
// backward (accumulate); every gradient must stay finite.
#include <cstring>
#include <vector>

#include "fuzz_receivers.hpp"     // defines: HomeFixture, PX_FUZZ_REQUIRE
#include "wire/sketch_wire.hpp"   // defines: SketchHeader, sketch_checksum64, SketchStatus

using namespace px;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::HomeFixture fx;
  const SketchStatus as_is = fx.home.receive(data, size, fuzz::kHomeStep);
  std::vector<uint8_t> sealed(data, data + size);
  if (size >= sizeof(SketchHeader)) {
    SketchHeader h;
    std::memcpy(&h, data, sizeof h);
    const uint64_t sum = sketch_checksum64(h, data + sizeof h, size - sizeof h);
    PX_FUZZ_REQUIRE(as_is != SketchStatus::OK || sum == h.checksum, "a sketch with a wrong checksum was accepted");
    h.checksum = sum;
    std::memcpy(sealed.data(), &h, sizeof h);
  }
  fx.home.receive(sealed.data(), sealed.size(), fuzz::kHomeStep);
  const size_t queued = fx.home.queued_rows();
  PX_FUZZ_REQUIRE(queued <= 2 * (size_t)fuzz::kMaxRows, "more rows queued than two sketches may hold");
  PX_FUZZ_REQUIRE(fx.home.accumulate() == queued, "accumulate did not process every queued row");
  PX_FUZZ_REQUIRE(fx.gradients_finite(), "an accepted sketch made a gradient non-finite");
  return 0;
}
