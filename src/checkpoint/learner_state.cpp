// defines: LearnerState
#include "checkpoint/learner_state.hpp"

#include "parallel/expert_parallel.hpp"  // defines: ExpertParallel (expert range)

namespace px {

namespace {
constexpr const char* kProgress = "state/step_cursor_tokens_island_optsteps";
}  // namespace

void LearnerState::save(ParallelCheckpointWriter& w) {
  model_.state_to_host();
  MoeModel<float>& m = model_.host();
  AdamW& opt = model_.optimizer();
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    if (m.params(a))  // (mode parallax: the routed experts live at their homes and in views)
      w.add_borrowed(std::string("params/") + arena_name(a),
                     std::span<const float>(m.params(a), m.arena_size(a)));
    if (!opt.m(a).empty()) {  // (mode parallax: no learner moments for the experts)
      w.add_borrowed(std::string("optim/m/") + arena_name(a), as_span(opt.m(a)));
      w.add_borrowed(std::string("optim/v/") + arena_name(a), as_span(opt.v(a)));
    }
  }
  w.add("model/router_bias", as_span(m.router_bias()));
  const std::vector<int64_t> s = {progress_.step, progress_.data_cursor, progress_.tokens,
                                  progress_.island_tokens, opt.steps_taken()};
  w.add(kProgress, as_span(s));
  if (const ExpertParallel* ep = model_.expert_parallel()) {
    const std::vector<int64_t> range = {ep->expert_begin(), ep->expert_end()};
    w.add("ep/expert_range", as_span(range));
  }
}

void LearnerState::load(const StateReader& r) {
  MoeModel<float>& m = model_.host();
  AdamW& opt = model_.optimizer();
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = m.arena_size(a);
    if (m.params(a)) r.read_into<float>(std::string("params/") + arena_name(a), {m.params(a), n});
    if (!opt.m(a).empty()) {
      r.read_into<float>(std::string("optim/m/") + arena_name(a), std::span<float>(opt.m(a)));
      r.read_into<float>(std::string("optim/v/") + arena_name(a), std::span<float>(opt.v(a)));
    }
  }
  r.read_into<float>("model/router_bias", std::span<float>(m.router_bias()));
  const auto s = r.read<int64_t>(kProgress, 5);
  progress_.step = s[0];
  progress_.data_cursor = s[1];
  progress_.tokens = s[2];
  progress_.island_tokens = s[3];
  opt.set_steps_taken((int)s[4]);
  model_.state_to_device();
}

}  // namespace px
