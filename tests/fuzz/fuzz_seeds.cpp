// Writes the seed corpora of the fuzz targets: valid messages of every kind for the receivers of
// fuzz_receivers.hpp, one file each, under OUT/<target>/ (fuzz_sketch, fuzz_bundle, fuzz_views,
// fuzz_push). Usage: fuzz_seeds OUT
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_receivers.hpp"      // defines: the fixtures and their constants
#include "model/ternary_view.hpp"  // defines: ternary_view_from_master, ternary_expert_to_wire
#include "sketch/sketch_handle.hpp"  // defines: sketch_handle
#include "sync/codec.hpp"          // defines: encode, encoded_bytes
#include "wire/push_header.hpp"    // defines: PushHeader
#include "wire/sketch_bundle.hpp"  // defines: SketchBundleHeader
#include "wire/sketch_wire.hpp"    // defines: sketch_encode

using namespace px;
namespace fs = std::filesystem;

namespace {

void write(const fs::path& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  fs::create_directories(dir);
  std::ofstream((dir / name).string(), std::ios::binary).write((const char*)bytes.data(), (std::streamsize)bytes.size());
}

std::vector<uint8_t> sketch(int expert, SketchElem dtype, int n) {
  SketchMeta meta;
  meta.handle = sketch_handle(fuzz::kKey, fuzz::kHomedExperts[expert][0], fuzz::kHomedExperts[expert][1]);
  meta.step = fuzz::kHomeStep;
  meta.source_rank = 1;
  meta.dtype = dtype;
  const std::vector<float> X = fuzz::weights((size_t)n * fuzz::kD, 41, 1.f), dY = fuzz::weights((size_t)n * fuzz::kD, 42, 1e-3f);
  std::vector<uint8_t> out;
  sketch_encode(out, meta, X.data(), dY.data(), n, fuzz::kD);
  return out;
}

std::vector<uint8_t> bundle(uint32_t flags, const std::vector<std::vector<uint8_t>>& sketches) {
  SketchBundleHeader hd;
  hd.count = (uint32_t)sketches.size();
  hd.step = fuzz::kHomeStep;
  hd.flags = flags;
  std::vector<uint8_t> out(sizeof hd);
  std::memcpy(out.data(), &hd, sizeof hd);
  for (const auto& s : sketches) {
    const uint32_t n = (uint32_t)s.size();
    out.insert(out.end(), (const uint8_t*)&n, (const uint8_t*)&n + 4);
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

std::vector<uint8_t> push(const fuzz::SyncerFixture& fx, int fragment, WireDtype dtype) {
  const size_t n = fx.plan.size(fragment);
  const size_t m = FragmentPlan::shard_begin(n, fuzz::kPushShard + 1, fx.topo.ranks_per_island) -
                   FragmentPlan::shard_begin(n, fuzz::kPushShard, fx.topo.ranks_per_island);
  const PushHeader h{4, 100, (int64_t)m, fuzz::kPushIsland, fragment, fuzz::kPushShard, (int32_t)dtype};
  std::vector<uint8_t> out(sizeof h + encoded_bytes(dtype, m));
  std::memcpy(out.data(), &h, sizeof h);
  const std::vector<float> delta = fuzz::weights(m, 51 + fragment, 1e-2f);
  encode(dtype, delta.data(), m, out.data() + sizeof h);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT\n");
    return 2;
  }
  const fs::path out = argv[1];
  const char* dtype_names[] = {"int8", "fp8", "bf16"};
  for (int t = 0; t < 3; ++t) write(out / "fuzz_sketch", dtype_names[t], sketch(0, (SketchElem)t, 4));
  write(out / "fuzz_sketch", "empty", sketch(1, SKETCH_INT8, 0));
  write(out / "fuzz_bundle", "two", bundle(0, {sketch(0, SKETCH_INT8, 3), sketch(1, SKETCH_FP8, 2)}));
  write(out / "fuzz_bundle", "flags_only", bundle(EXPERT_FLAG_CHECKPOINT | EXPERT_FLAG_STOP, {}));

  const fuzz::ViewFixture vf;
  const auto& w = vf.master;
  write(out / "fuzz_views", "ternary",
        ternary_expert_to_wire(ternary_view_from_master(w[0].data(), w[1].data(), w[2].data(), fuzz::kD, fuzz::kH, fuzz::kAct)));
  std::vector<float> moved[3];
  for (int k = 0; k < 3; ++k) {
    moved[k] = w[k];
    const std::vector<float> step = fuzz::weights(w[k].size(), 60 + k, 1e-2f);
    for (size_t i = 0; i < step.size(); ++i) moved[k][i] += step[i];
  }
  write(out / "fuzz_views", "lowrank_delta",
        lowrank_expert_to_wire(lowrank_expert_delta(moved[0].data(), moved[1].data(), moved[2].data(), vf.lowrank,
                                                    fuzz::kDeltaRank, 8)));

  const fuzz::SyncerFixture sf;
  for (int f = 0; f < sf.plan.count(); ++f)
    for (WireDtype d : {WireDtype::FP32, WireDtype::BF16, WireDtype::INT8, WireDtype::FP4, WireDtype::TERNARY})
      write(out / "fuzz_push", std::string(to_string(d)) + "_f" + std::to_string(f), push(sf, f, d));
  return 0;
}
