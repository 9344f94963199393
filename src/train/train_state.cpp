// Checkpoint contents of every role, written with parallel HDF5.
#include "train/train_state.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "io/checkpoint_file.hpp"  // defines: checkpoint_path, prune_checkpoints
#include "parallel/expert_placement.hpp"  // defines: experts_homed_at
#include "util/errors.hpp"         // defines: UserError

namespace px {

namespace {
const char* an(Arena a) { return a == Arena::BACKBONE ? "backbone" : "experts"; }
template <class T>
std::span<const T> sp(const std::vector<T>& v) {
  return std::span<const T>(v.data(), v.size());
}
}  // namespace

void add_learner_state(ParallelCheckpointWriter& w, Learner& L, OuterSync* outer,
                       const Progress& p) {
  MoeModel<float>& m = L.model();
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = m.layout().size(a);
    if (m.params(a))  // (mode parallax: the routed experts live at their homes and in views)
      w.add(std::string("params/") + an(a), std::span<const float>(m.params(a), n));
    if (!L.opt().m(a).empty()) {  // (mode parallax: no learner moments for the experts)
      w.add(std::string("optim/m/") + an(a), sp(L.opt().m(a)));
      w.add(std::string("optim/v/") + an(a), sp(L.opt().v(a)));
    }
    if (outer && !outer->theta_global(a).empty()) {
      w.add(std::string("outer/theta_global/") + an(a), sp(outer->theta_global(a)));
      w.add(std::string("outer/momentum/") + an(a), sp(outer->momentum(a)));
    }
  }
  if (outer)
    for (size_t f = 0; f < outer->error_feedback().size(); ++f)
      w.add(fmt::format("outer/ef/{}", f), sp(outer->error_feedback()[f].residual()));
  w.add("model/router_bias", sp(m.router_bias()));
  const std::vector<int64_t> s = {p.step, p.data_cursor, p.tokens, p.island_tokens,
                                  L.opt().steps_taken()};
  w.add("state/step_cursor_tokens_island_optsteps", sp(s));
  if (const ExpertParallel* ep = L.expert_parallel()) {
    const std::vector<int64_t> r = {ep->expert_begin(), ep->expert_end()};
    w.add("ep/expert_range", sp(r));
  }
}

void add_home_state(ParallelCheckpointWriter& w, ExpertHome& h, int64_t step) {
  w.add("home/masters", sp(h.masters()));
  w.add("home/grad_sum", sp(h.grad_sum()));
  w.add("home/m", sp(h.adam_m()));
  w.add("home/v", sp(h.adam_v()));
  if (!h.surrogate_factors().empty()) w.add("home/surrogates", sp(h.surrogate_factors()));
  const std::vector<int64_t> st = {step, h.steps_taken(), (int64_t)h.owned().size()};
  w.add("home/step_updates_experts", sp(st));
}

bool rehoming(const std::string& path, const Config& cfg) {
  const Config saved = checkpoint_config(path);
  const TopologyConfig &s = saved.topology, &t = cfg.topology;
  if (cfg.train.mode != TrainMode::PARALLAX || saved.train.mode != TrainMode::PARALLAX ||
      s.expert_workers == t.expert_workers || s.islands != t.islands ||
      s.ranks_per_island != t.ranks_per_island || s.syncers != t.syncers)
    return false;
  if (cfg.experts.view != ViewKind::TERNARY || cfg.experts.signal != ExpertSignalKind::SKETCHES)
    throw UserError(fmt::format("{}: resuming with topology.expert_workers = {} (was {}) re-homes "
                                "the experts; supported for experts.view = \"ternary\" and "
                                "experts.signal = \"sketches\" only",
                                path, cfg.topology.expert_workers, saved.topology.expert_workers));
  return true;
}

Topology saved_topology(const std::string& path, int rank) {
  const Config saved = checkpoint_config(path);
  const TopologyConfig& t = saved.topology;
  return Topology::make(t.islands, t.ranks_per_island, t.syncers, t.expert_workers, rank,
                       (int)checkpoint_world_size(path));
}

int64_t load_home_state_rehomed(const std::string& path, ExpertHome& h, const ModelConfig& mc) {
  const int64_t step = read_rank_array<int64_t>(path, 0, "state/step_cursor_tokens_island_optsteps", 5)[0];
  const size_t per = h.per_expert();
  struct Old {
    std::vector<float> masters, grads, m, v;
    std::vector<ExpertId> owned;
  };
  std::map<int, Old> olds;  // old home rank -> its arrays
  int steps = 0;
  const Topology old = saved_topology(path, 0);
  for (size_t i = 0; i < h.owned().size(); ++i) {
    const ExpertId id = h.owned()[i];
    const int r = expert_home(old, id.moe_layer, id.expert, mc.n_experts);
    auto it = olds.find(r);
    if (it == olds.end()) {
      Old o;
      o.owned = experts_homed_at(saved_topology(path, r), r, mc.moe_layers(), mc.n_experts);
      const size_t n = o.owned.size() * per;
      o.masters = read_rank_array<float>(path, r, "home/masters", n);
      o.grads = read_rank_array<float>(path, r, "home/grad_sum", n);
      o.m = read_rank_array<float>(path, r, "home/m", n);
      o.v = read_rank_array<float>(path, r, "home/v", n);
      steps = std::max(steps, (int)read_rank_array<int64_t>(path, r, "home/step_updates_experts", 3)[1]);
      it = olds.emplace(r, std::move(o)).first;
    }
    const Old& o = it->second;
    const size_t j = (size_t)(std::find(o.owned.begin(), o.owned.end(), id) - o.owned.begin());
    for (auto [src, dst] : {std::pair{&o.masters, &h.masters()}, {&o.grads, &h.grad_sum()},
                            {&o.m, &h.adam_m()}, {&o.v, &h.adam_v()}})
      std::copy(src->begin() + j * per, src->begin() + (j + 1) * per, dst->begin() + i * per);
  }
  h.set_steps_taken(steps);
  return step;
}

int64_t load_home_state(const std::string& path, int rank, ExpertHome& h) {
  const auto st = read_rank_array<int64_t>(path, rank, "home/step_updates_experts", 3);
  if (st[2] != (int64_t)h.owned().size())
    throw UserError(fmt::format("{}: rank {} homed {} experts there, {} now", path, rank, st[2],
                                h.owned().size()));
  for (auto [name, v] : {std::pair{"home/masters", &h.masters()}, {"home/grad_sum", &h.grad_sum()},
                         {"home/m", &h.adam_m()}, {"home/v", &h.adam_v()}}) {
    const auto x = read_rank_array<float>(path, rank, name, v->size());
    std::copy(x.begin(), x.end(), v->begin());  // in place: the sketch home points into them
  }
  h.set_steps_taken((int)st[1]);
  const size_t nf = h.surrogate_factors().size();
  if (nf) h.set_surrogate_factors(read_rank_array<float>(path, rank, "home/surrogates", nf));
  return st[0];
}

void add_view_state(ParallelCheckpointWriter& w, ExpertViews& v) {
  const std::vector<int32_t> st = v.state();
  w.add("views/state", sp(st));
  const std::vector<int64_t> n = {(int64_t)st.size()};
  w.add("views/state_words", sp(n));
}

void load_view_state(const std::string& path, int rank, ExpertViews& v, bool rehome) {
  const size_t n = (size_t)read_rank_array<int64_t>(path, rank, "views/state_words", 1)[0];
  v.set_state(read_rank_array<int32_t>(path, rank, "views/state", n));
  if (!rehome) return;
  // experts this rank homed before and no longer does: their views from my old masters
  const Config saved = checkpoint_config(path);
  const ModelConfig& mc = saved.model;
  const auto mine = experts_homed_at(saved_topology(path, rank), rank, mc.moe_layers(), mc.n_experts);
  if (mine.empty()) return;
  const size_t wsz = (size_t)mc.d_model * mc.expert_hidden;
  const bool glu = mc.expert_act == ExpertActKind::SWIGLU;
  const size_t per = (glu ? 3 : 2) * wsz;
  const auto masters = read_rank_array<float>(path, rank, "home/masters", mine.size() * per);
  for (size_t i = 0; i < mine.size(); ++i)
    if (v.remote(mine[i].moe_layer, mine[i].expert)) {
      const float* w = masters.data() + i * per;
      v.set_from_master(mine[i].moe_layer, mine[i].expert, w, glu ? w + wsz : nullptr, w + per - wsz);
    }
}

void add_adapter_state(ParallelCheckpointWriter& w, ExpertAdapters& a) {
  w.add("adapters/params", sp(a.params()));
  w.add("adapters/m", sp(a.adam_m()));
  w.add("adapters/v", sp(a.adam_v()));
  w.add("adapters/tokens", sp(a.tokens()));
  const std::vector<int64_t> st = {a.steps_in_cycle()};
  w.add("adapters/steps_in_cycle", sp(st));
}

void load_adapter_state(const std::string& path, int rank, ExpertAdapters& a) {
  for (auto [name, v] : {std::pair{"adapters/params", &a.params()}, {"adapters/m", &a.adam_m()},
                         {"adapters/v", &a.adam_v()}})
    *v = read_rank_array<float>(path, rank, name, v->size());
  a.tokens() = read_rank_array<int64_t>(path, rank, "adapters/tokens", a.tokens().size());
  a.steps_in_cycle() = (int)read_rank_array<int64_t>(path, rank, "adapters/steps_in_cycle", 1)[0];
}

void add_syncer_state(ParallelCheckpointWriter& w, Syncer& s) {
  for (auto& [u, st] : s.state()) {
    w.add(fmt::format("syncer/unit_{}/theta", u), sp(st->theta));
    w.add(fmt::format("syncer/unit_{}/momentum", u), sp(st->mom));
  }
}

std::string commit_checkpoint(MPI_Comm world, ParallelCheckpointWriter& w, const std::string& dir,
                              const Config& cfg, int64_t step, const BpeTokenizer* tok, int keep) {
  int rank = 0;
  MPI_Comm_rank(world, &rank);
  if (rank == 0 && tok) {
    std::vector<int32_t> merges;
    for (auto [l, r] : tok->merges()) merges.push_back(l), merges.push_back(r);
    w.add("tokenizer/merges", sp(merges));
    const std::vector<int64_t> count = {(int64_t)tok->merges().size()};
    w.add("tokenizer/count", sp(count));
  }
  const std::string path = checkpoint_path(dir, step);
  w.commit(world, path, {{"config", config_to_toml(cfg)}, {"format", "parallax-checkpoint-2"}},
           step);
  if (rank == 0) prune_checkpoints(dir, keep);
  MPI_Barrier(world);
  return path;
}

void check_resume_compatible(const std::string& path, const Config& cfg) {
  const Config saved = checkpoint_config(path);
  {
    Config a = cfg;
    a.model = saved.model;
    if (!(a == cfg))
      throw UserError(fmt::format("{}: written for another [model] section; resume with the "
                                  "run's own config.toml",
                                  path));
    Config b = cfg;
    b.topology = saved.topology;
    const bool same_world = checkpoint_world_size(path) == cfg.topology.islands *
                                                               cfg.topology.ranks_per_island +
                                                           cfg.topology.syncers +
                                                           cfg.topology.expert_workers;
    if ((!(b == cfg) || !same_world) && !rehoming(path, cfg))
      throw UserError(fmt::format("{}: written on another [topology]; resuming on a different "
                                  "topology is supported only for mode parallax with another "
                                  "topology.expert_workers (experts are re-homed)",
                                  path));
  }
}

void load_learner_state(const std::string& path, int rank, const Config& cfg, Learner& L,
                        OuterSync* outer, Progress& p) {
  check_resume_compatible(path, cfg);
  MoeModel<float>& m = L.model();
  auto into = [&](const std::string& name, float* dst, size_t n) {
    const auto v = read_rank_array<float>(path, rank, name, n);
    std::copy(v.begin(), v.end(), dst);
  };
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = m.layout().size(a);
    if (m.params(a)) into(std::string("params/") + an(a), m.params(a), n);
    if (!L.opt().m(a).empty()) {
      into(std::string("optim/m/") + an(a), L.opt().m(a).data(), n);
      into(std::string("optim/v/") + an(a), L.opt().v(a).data(), n);
    }
    if (outer && !outer->theta_global(a).empty()) {
      into(std::string("outer/theta_global/") + an(a), outer->theta_global(a).data(), n);
      into(std::string("outer/momentum/") + an(a), outer->momentum(a).data(), n);
    }
  }
  if (outer)
    for (size_t f = 0; f < outer->error_feedback().size(); ++f) {
      auto& r = outer->error_feedback()[f].residual();
      into(fmt::format("outer/ef/{}", f), r.data(), r.size());
    }
  into("model/router_bias", m.router_bias().data(), m.router_bias().size());
  const auto s = read_rank_array<int64_t>(path, rank, "state/step_cursor_tokens_island_optsteps", 5);
  p.step = s[0];
  p.data_cursor = s[1];
  p.tokens = s[2];
  p.island_tokens = s[3];
  L.opt().set_steps_taken((int)s[4]);
}

void load_syncer_state(const std::string& path, int rank, Syncer& s) {
  for (auto& [u, st] : s.state()) {
    st->theta = read_rank_array<float>(path, rank, fmt::format("syncer/unit_{}/theta", u),
                                       st->theta.size());
    st->mom = read_rank_array<float>(path, rank, fmt::format("syncer/unit_{}/momentum", u),
                                     st->mom.size());
  }
}

Config checkpoint_config(const std::string& path) {
  return parse_config(checkpoint_attr(path, "config"), path + " (attribute config)");
}

BpeTokenizer checkpoint_tokenizer(const std::string& path) {
  const size_t m = (size_t)read_rank_array<int64_t>(path, 0, "tokenizer/count", 1)[0];
  const auto flat = read_rank_array<int32_t>(path, 0, "tokenizer/merges", 2 * m);
  std::vector<std::pair<int32_t, int32_t>> merges(m);
  for (size_t i = 0; i < m; ++i) merges[i] = {flat[2 * i], flat[2 * i + 1]};
  return BpeTokenizer::from_merges(std::move(merges), path);
}

void load_model_params(const std::string& path, MoeModel<float>& model) {
  const ParamLayout& L = model.layout();
  const auto bb = read_rank_array<float>(path, 0, "params/backbone", L.backbone_size);
  std::copy(bb.begin(), bb.end(), model.params(Arena::BACKBONE));
  const int world = (int)checkpoint_world_size(path);
  for (int r = 0; r < world; ++r) {
    if (!has_rank_array(path, r, "params/experts")) continue;
    const auto ex = read_rank_array<float>(path, r, "params/experts", L.experts_size);
    int64_t e0 = 0, e1 = model.config().n_experts;
    if (has_rank_array(path, r, "ep/expert_range")) {
      const auto rg = read_rank_array<int64_t>(path, r, "ep/expert_range", 2);
      e0 = rg[0];
      e1 = rg[1];
    }
    for (const ParamSpec& s : L.specs) {
      if (s.arena != Arena::EXPERTS) continue;
      const size_t per = s.size / (size_t)s.shape[0];
      std::copy(ex.begin() + s.offset + per * e0, ex.begin() + s.offset + per * e1,
                model.params(Arena::EXPERTS) + s.offset + per * e0);
    }
    if (e0 == 0 && e1 == model.config().n_experts) break;
  }
  // mode parallax: the learners' arenas hold views of the experts homed elsewhere; take every
  // expert's master from its home
  const Config saved = checkpoint_config(path);
  if (saved.train.mode == TrainMode::PARALLAX) {
    const TopologyConfig& tc = saved.topology;
    for (int r = 0; r < world; ++r) {
      if (!has_rank_array(path, r, "home/masters")) continue;
      const Topology topo =
          Topology::make(tc.islands, tc.ranks_per_island, tc.syncers, tc.expert_workers, r, world);
      ExpertHome home(saved, L,
                      experts_homed_at(topo, r, saved.model.moe_layers(), saved.model.n_experts),
                      model.params(Arena::EXPERTS));
      load_home_state(path, r, home);
      home.write_masters(model.params(Arena::EXPERTS));
    }
  }
  const auto bias = read_rank_array<float>(path, 0, "model/router_bias", model.router_bias().size());
  std::copy(bias.begin(), bias.end(), model.router_bias().begin());
}

}  // namespace px
