// Checkpoint write/restore of a one-rank run.
#include "train/train_state.hpp"

#include <fmt/format.h>

#include "io/checkpoint_file.hpp"  // defines: CheckpointWriter, CheckpointReader
#include "util/errors.hpp"         // defines: UserError

namespace px {

namespace {
const char* arena_name(Arena a) { return a == Arena::BACKBONE ? "backbone" : "experts"; }
}  // namespace

std::string save_checkpoint(const std::string& ckpt_dir, const Config& cfg, const TrainState& st,
                            const BpeTokenizer& tok, int keep) {
  CheckpointWriter w;
  w.set_attr("config", config_to_toml(cfg));
  w.set_attr("step", st.step);
  w.set_attr("format", std::string("parallax-checkpoint-1"));
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = st.model.layout().size(a);
    const std::string an = arena_name(a);
    w.add("params/" + an, std::span<const float>(st.model.params(a), n));
    w.add("optim/m/" + an, std::span<const float>(st.opt.m(a)));
    w.add("optim/v/" + an, std::span<const float>(st.opt.v(a)));
  }
  w.add("model/router_bias", std::span<const float>(st.model.router_bias()));
  const int64_t scalars[4] = {st.step, st.data_cursor, st.tokens, st.opt.steps_taken()};
  w.add("state/step_cursor_tokens_optsteps", std::span<const int64_t>(scalars, 4));
  std::vector<int32_t> merges;
  for (auto [l, r] : tok.merges()) merges.push_back(l), merges.push_back(r);
  w.add("tokenizer/merges", std::span<const int32_t>(merges),
        {(hsize_t)tok.merges().size(), 2});
  const std::string path = checkpoint_path(ckpt_dir, st.step);
  w.commit(path);
  prune_checkpoints(ckpt_dir, keep);
  return path;
}

void load_checkpoint(const std::string& path, const Config& cfg, TrainState& st) {
  CheckpointReader r(path);
  const Config saved = parse_config(r.attr_string("config"), path + " (attribute config)");
  Config same_model = cfg;
  same_model.model = saved.model;
  if (!(same_model == cfg))
    throw UserError(fmt::format("{}: checkpoint was written for another [model] section; "
                                "resume with the run's own config ({}/../config.toml)",
                                path, path));
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const size_t n = st.model.layout().size(a);
    const std::string an = arena_name(a);
    r.read_into("params/" + an, std::span<float>(st.model.params(a), n));
    r.read_into("optim/m/" + an, std::span<float>(st.opt.m(a)));
    r.read_into("optim/v/" + an, std::span<float>(st.opt.v(a)));
  }
  r.read_into("model/router_bias", std::span<float>(st.model.router_bias()));
  const auto s = r.read<int64_t>("state/step_cursor_tokens_optsteps", 4);
  st.step = s[0];
  st.data_cursor = s[1];
  st.tokens = s[2];
  st.opt.set_steps_taken((int)s[3]);
}

Config checkpoint_config(const std::string& path) {
  CheckpointReader r(path);
  return parse_config(r.attr_string("config"), path + " (attribute config)");
}

BpeTokenizer checkpoint_tokenizer(const std::string& path) {
  CheckpointReader r(path);
  const auto shape = r.shape("tokenizer/merges");
  const size_t m = shape.empty() ? 0 : shape[0];
  const auto flat = r.read<int32_t>("tokenizer/merges", m * 2);
  std::vector<std::pair<int32_t, int32_t>> merges(m);
  for (size_t i = 0; i < m; ++i) merges[i] = {flat[2 * i], flat[2 * i + 1]};
  return BpeTokenizer::from_merges(std::move(merges), path);
}

}  // namespace px
