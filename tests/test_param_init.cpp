// The run's initial parameters (src/model/param_init.hpp): counter-based, so any range of an
// arena, one expert (ExpertSource) or a fragment's shard (FragmentPlan::initial) computed alone
// equals the same slice of the whole initialized model; matrices are normal with their std,
// norm gains one; a model without routed arenas holds no experts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "config/config.hpp"         // defines: Config, load_config
#include "model/expert_slices.hpp"   // defines: expert_offset
#include "model/expert_source.hpp"   // defines: ExpertSource
#include "model/moe_model.hpp"       // defines: MoeModel
#include "model/param_init.hpp"      // defines: init_arena_range
#include "sync/fragments.hpp"        // defines: FragmentPlan

using namespace px;

namespace {

Config tiny(const std::string& act = "swiglu") {
  return load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml",
                     {"model.n_layers=3", "model.expert_act=\"" + act + "\""});
}

}  // namespace

TEST(ParamInit, AnyRangeEqualsTheSameSliceOfTheWholeArena) {
  const Config cfg = tiny();
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(11);
  std::mt19937_64 pick(5);
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = model.layout().size(a);
    const float* whole = model.params(a);
    for (int trial = 0; trial < 40; ++trial) {
      size_t lo = pick() % n, hi = pick() % (n + 1);
      if (lo > hi) std::swap(lo, hi);
      std::vector<float> part(hi - lo, -7.f);
      init_arena_range(model.layout(), a, 11, lo, hi, part.data());
      for (size_t i = lo; i < hi; ++i) ASSERT_EQ(part[i - lo], whole[i]) << arena_name(a) << " element " << i;
    }
  }
}

TEST(ParamInit, MatricesAreNormalWithTheirStdAndNormGainsAreOne) {
  const Config cfg = tiny();
  MoeModel<double> model(cfg.model, 1, 2);
  model.init_params(3);
  int checked = 0;
  for (const ParamSpec& s : model.layout().specs) {
    const double* p = model.params(s.arena) + s.offset;
    if (s.init_std == 0) {
      for (size_t i = 0; i < s.size; ++i) ASSERT_EQ(p[i], 1.0) << s.name;
      continue;
    }
    if (s.size < 4096) continue;  // too few values for the moments
    double sum = 0, sq = 0, q4 = 0;
    for (size_t i = 0; i < s.size; ++i) sum += p[i], sq += p[i] * p[i];
    const double n = (double)s.size, mean = sum / n, var = sq / n - mean * mean;
    for (size_t i = 0; i < s.size; ++i) q4 += std::pow((p[i] - mean), 4);
    const double kurtosis = q4 / n / (var * var);
    EXPECT_LT(std::abs(mean), 5 * s.init_std / std::sqrt(n)) << s.name;
    EXPECT_NEAR(std::sqrt(var) / s.init_std, 1.0, 5 * std::sqrt(0.5 / n)) << s.name;
    EXPECT_NEAR(kurtosis, 3.0, 10 * std::sqrt(24.0 / n)) << s.name;  // normal, not uniform (1.8)
    ++checked;
  }
  EXPECT_GT(checked, 5);
}

TEST(ParamInit, SeedsAndArenasDrawDifferentValues) {
  const Config cfg = tiny();
  const ParamLayout L(cfg.model);
  std::vector<float> a(1000), b(1000), c(1000);
  init_arena_range(L, Arena::EXPERTS, 1, 0, 1000, a.data());
  init_arena_range(L, Arena::EXPERTS, 2, 0, 1000, b.data());
  init_arena_range(L, Arena::BACKBONE, 1, L.embed, L.embed + 1000, c.data());  // same std (0.02)
  int same_seed = 0, same_arena = 0;
  for (int i = 0; i < 1000; ++i) same_seed += a[i] == b[i], same_arena += a[i] == c[i];
  EXPECT_EQ(same_seed, 0);
  EXPECT_EQ(same_arena, 0);
}

TEST(ParamInit, ExpertSourceInitialEqualsTheArenaOfAnInitializedModel) {
  for (const char* act : {"swiglu", "relu2"}) {
    const Config cfg = tiny(act);
    MoeModel<float> model(cfg.model, 1, 2);
    model.init_params(9);
    const ExpertSource initial = ExpertSource::initial(cfg.model, model.layout(), 9);
    const ExpertSource arena = ExpertSource::arena(cfg.model, model.layout(), model.params(Arena::EXPERTS));
    const size_t wsz = (size_t)cfg.model.d_model * cfg.model.expert_hidden;
    for (int m = 0; m < cfg.model.moe_layers(); ++m)
      for (int e = 0; e < cfg.model.n_experts; ++e) {
        const float *A1, *A3, *A2, *I1, *I3, *I2;
        arena.get(m, e, &A1, &A3, &A2);
        EXPECT_EQ(A1, model.params(Arena::EXPERTS) + expert_offset(cfg.model, model.layout(), m, e, 0));
        const std::vector<float> a1(A1, A1 + wsz), a2(A2, A2 + wsz);
        const std::vector<float> a3 = A3 ? std::vector<float>(A3, A3 + wsz) : std::vector<float>();
        initial.get(m, e, &I1, &I3, &I2);
        EXPECT_EQ(std::vector<float>(I1, I1 + wsz), a1) << act << " W1 of " << m << "," << e;
        EXPECT_EQ(std::vector<float>(I2, I2 + wsz), a2) << act << " W2 of " << m << "," << e;
        ASSERT_EQ(I3 != nullptr, std::string(act) == "swiglu");
        if (I3) EXPECT_EQ(std::vector<float>(I3, I3 + wsz), a3) << act << " W3 of " << m << "," << e;
      }
  }
}

TEST(ParamInit, FragmentShardsEqualTheGatherOfTheWholeModel) {
  const Config cfg = tiny();
  MoeModel<float> model(cfg.model, 1, 2);
  model.init_params(4);
  const float* const arenas[2] = {model.params(Arena::BACKBONE), model.params(Arena::EXPERTS)};
  for (bool with_experts : {true, false}) {
    const FragmentPlan plan(model.layout(), 2, with_experts);
    for (int f = 0; f < plan.count(); ++f)
      for (int r = 0; r < 3; ++r) {
        const size_t lo = FragmentPlan::shard_begin(plan.size(f), r, 3), hi = FragmentPlan::shard_begin(plan.size(f), r + 1, 3);
        std::vector<float> whole(hi - lo), alone(hi - lo, -1.f);
        plan.gather(f, lo, hi, arenas, whole.data());
        plan.initial(model.layout(), 4, f, lo, hi, alone.data());
        EXPECT_EQ(alone, whole) << "fragment " << f << " shard " << r << " experts " << with_experts;
      }
  }
}

TEST(ParamInit, AModelWithoutRoutedArenasHoldsNoExpertsAndTheSameBackbone) {
  const Config cfg = tiny();
  MoeModel<float> whole(cfg.model, 1, 4), backbone_only(cfg.model, 1, 4, ModelMemory{false});
  whole.init_params(6);
  backbone_only.init_params(6);
  EXPECT_EQ(backbone_only.params(Arena::EXPERTS), nullptr);
  EXPECT_EQ(backbone_only.grads(Arena::EXPERTS), nullptr);
  const size_t n = whole.layout().backbone_size;
  EXPECT_EQ(std::vector<float>(backbone_only.params(Arena::BACKBONE), backbone_only.params(Arena::BACKBONE) + n),
            std::vector<float>(whole.params(Arena::BACKBONE), whole.params(Arena::BACKBONE) + n));
}
