// What experts.signal and experts.view mean together (src/experts/expert_signal.hpp): signal
// "none" with view "full" is the SPES-style baseline (homes train from their own island's
// tokens: their gradient sum holds ONE island's gradient per step), with the other views the
// frozen-experts baseline; the sketch and adapter signals bring every island's gradient home.
#include <gtest/gtest.h>

#include "experts/expert_signal.hpp"

using namespace px;

TEST(ExpertSignal, SpesFrozenAndTheIslandsInAHomesGradient) {
  Config c;
  c.topology.islands = 4;
  for (auto signal : {ExpertSignalKind::SKETCHES, ExpertSignalKind::ADAPTERS, ExpertSignalKind::NONE})
    for (auto view : {ViewKind::TERNARY, ViewKind::LOWRANK, ViewKind::FULL}) {
      c.experts.signal = signal;
      c.experts.view = view;
      const bool none = signal == ExpertSignalKind::NONE, full = view == ViewKind::FULL;
      const std::string at = std::string(to_string(signal)) + " + " + std::string(to_string(view));
      EXPECT_EQ(spes_baseline(c.experts), none && full) << at;
      EXPECT_EQ(experts_frozen(c.experts), none && !full) << at;
      EXPECT_EQ(islands_per_home_grad(c), none && full ? 1 : 4) << at;
    }
}
