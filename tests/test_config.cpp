// Config: TOML parsing, overrides, validation messages, round trip, check_supported.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "config/config.hpp"
#include "util/errors.hpp"

namespace fs = std::filesystem;
using px::Config;
using px::UserError;

namespace {

const std::string kSrc = PX_SOURCE_DIR;

// A minimal valid config (the one field without a usable default).
const std::string kMinimal = "[data]\ndir = \"data/x\"\n";

// Runs `fn`, expects a UserError whose message contains every one of `parts`.
template <class Fn>
void expect_user_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a UserError";
  } catch (const UserError& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

Config parse(const std::string& text, const std::vector<std::string>& ov = {}) {
  return px::parse_config(text, "cfg.toml", ov);
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("px_test_config_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(Config, ExperimentsParseAndValidate) {
  Config tiny = px::load_config(kSrc + "/experiments/tiny.toml");
  EXPECT_EQ(tiny.model.d_model, 64);
  EXPECT_EQ(tiny.model.n_experts, 8);
  EXPECT_EQ(tiny.model.dense_hidden, 128);
  EXPECT_EQ(tiny.train.steps, 300);
  EXPECT_DOUBLE_EQ(tiny.train.lr, 3e-3);
  EXPECT_DOUBLE_EQ(tiny.train.min_lr, 3e-4);
  EXPECT_EQ(tiny.train.seed, 1234);
  EXPECT_EQ(tiny.data.dir, "data/fortunes-512");
  EXPECT_EQ(tiny.checkpoint.every, 100);
  EXPECT_EQ(tiny.log.every, 10);
  EXPECT_NO_THROW(px::check_supported(tiny));

  Config small = px::load_config(kSrc + "/experiments/small.toml");
  EXPECT_EQ(small.model.vocab, 2048);
  EXPECT_EQ(small.model.n_experts, 16);
  EXPECT_EQ(small.train.batch_size, 16);
  EXPECT_EQ(small.data.eval_batches, 16);
  EXPECT_NO_THROW(px::check_supported(small));

  // Every file under experiments/ parses and validates.
  for (const auto& e : fs::directory_iterator(kSrc + "/experiments"))
    if (e.path().extension() == ".toml") EXPECT_NO_THROW(px::load_config(e.path().string())) << e.path();
}

TEST(Config, Defaults) {
  Config c = parse(kMinimal);
  EXPECT_EQ(c.train.mode, px::TrainMode::SYNC);
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-3);
  EXPECT_DOUBLE_EQ(c.train.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(c.train.grad_clip, 1.0);
  EXPECT_TRUE(c.train.deterministic);
  EXPECT_EQ(c.topology.islands, 1);
  EXPECT_EQ(c.sync.backbone_every, 50);
  EXPECT_DOUBLE_EQ(c.sync.outer_lr, 0.7);
  EXPECT_DOUBLE_EQ(c.sync.outer_momentum, 0.9);
  EXPECT_EQ(c.sync.outer_dtype, px::WireDtype::FP32);
  EXPECT_EQ(c.experts.update_rank, 8);
  EXPECT_EQ(c.sketch.dtype, px::SketchDtype::INT8);
  EXPECT_EQ(px::to_string(c.model.expert_act), "swiglu");
}

TEST(Config, DesignFieldNamesAllPresent) {
  // The §8 contract: these names must exist (scripts and sweeps use them).
  const char* names[] = {
      "model.d_model", "model.n_layers", "model.n_heads", "model.vocab", "model.seq_len",
      "model.dense_layers", "model.n_experts", "model.top_k", "model.n_shared",
      "model.expert_hidden", "model.dense_hidden", "model.expert_act", "model.aux_alpha",
      "model.balance", "train.mode", "train.device", "train.steps", "train.batch_size",
      "train.lr", "train.warmup_steps", "train.min_lr", "train.weight_decay", "train.grad_clip",
      "train.seed", "train.deterministic", "data.dir", "data.eval_every", "data.eval_batches",
      "topology.islands", "topology.ranks_per_island", "topology.syncers",
      "topology.expert_workers", "sync.island_every", "sync.backbone_every",
      "sync.backbone_sync", "sync.quorum", "sync.grace_steps", "sync.mix_alpha", "sync.merge",
      "sync.fragments", "sync.outer_lr", "sync.outer_momentum", "sync.outer_dtype",
      "experts.signal", "experts.view", "experts.adapter_rank", "experts.surrogate_rank",
      "experts.update_rank", "experts.adapter_every", "experts.snapshot_every",
      "experts.surrogate_every", "experts.expert_update_every", "experts.private_layers",
      "experts.sparsity_2of8", "sketch.tokens", "sketch.dtype", "sketch.max_staleness",
      "checkpoint.every", "checkpoint.keep", "log.every"};
  auto all = px::config_field_names();
  for (const char* n : names) EXPECT_NE(std::find(all.begin(), all.end(), n), all.end()) << n;
}

TEST(Config, UnknownKeyAndSection) {
  expect_user_error([] { parse(kMinimal + "[model]\nd_modle = 64\n"); },
                    {"unknown key 'model.d_modle' in cfg.toml", "line 4", "model.d_model"});
  expect_user_error([] { parse(kMinimal + "[modle]\nd_model = 64\n"); }, {"unknown section '[modle]'"});
  expect_user_error([] { parse("steps = 3\n" + kMinimal); }, {"unknown key 'steps'"});
  expect_user_error([] { parse(kMinimal + "[model.sub]\nx = 1\n"); }, {"unknown key 'model.sub'"});
}

TEST(Config, WrongType) {
  expect_user_error([] { parse(kMinimal + "[model]\nd_model = \"64\"\n"); },
                    {"model.d_model", "64", "expected an integer", "got a string"});
  expect_user_error([] { parse(kMinimal + "[model]\nd_model = 64.5\n"); },
                    {"model.d_model", "64.5", "expected an integer"});
  expect_user_error([] { parse(kMinimal + "[train]\nlr = \"fast\"\n"); },
                    {"train.lr", "fast", "expected a number"});
  expect_user_error([] { parse(kMinimal + "[train]\ndeterministic = 1\n"); },
                    {"train.deterministic", "expected true or false"});
  expect_user_error([] { parse(kMinimal + "[train]\nmode = \"async\"\n"); },
                    {"train.mode", "async", "\"sync\", \"diloco\", \"parallax\"", "cfg.toml (line 4)"});
  expect_user_error([] { parse(kMinimal + "[model]\nexpert_act = 3\n"); },
                    {"model.expert_act", "\"swiglu\", \"relu2\""});
  // An integer is accepted where a float is expected.
  EXPECT_DOUBLE_EQ(parse(kMinimal + "[train]\nlr = 1\n").train.lr, 1.0);
}

TEST(Config, OutOfRange) {
  expect_user_error([] { parse(kMinimal + "[model]\ntop_k = 12\n"); },
                    {"model.top_k = 12: must be between 1 and model.n_experts (8)"});
  expect_user_error([] { parse(kMinimal + "[model]\nvocab = 100\n"); }, {"model.vocab = 100: must be between 256 and"});
  expect_user_error([] { parse(kMinimal + "[model]\nseq_len = 1\n"); }, {"model.seq_len = 1"});
  expect_user_error([] { parse(kMinimal + "[train]\nbatch_size = 0\n"); }, {"train.batch_size = 0"});
  expect_user_error([] { parse(kMinimal + "[train]\nlr = 0.0\n"); }, {"train.lr = 0.0", "> 0"});
  expect_user_error([] { parse(kMinimal + "[sync]\nouter_momentum = 1.0\n"); }, {"sync.outer_momentum", "< 1"});
  expect_user_error([] { parse(kMinimal + "[train]\nlr = nan\n"); }, {"train.lr = nan", "finite"});
  expect_user_error([] { parse(kMinimal + "[model]\nd_model = 9999999999\n"); }, {"model.d_model", "32-bit"});
  expect_user_error([] { parse(kMinimal + "[log]\nevery = 0\n"); }, {"log.every = 0"});
}

TEST(Config, CrossFieldRules) {
  expect_user_error([] { parse(kMinimal + "[model]\nd_model = 66\n"); },
                    {"model.d_model = 66", "divisible by model.n_heads (4)"});
  expect_user_error([] { parse(kMinimal + "[model]\nd_model = 12\nn_heads = 4\n"); },
                    {"head dimension must be even"});
  expect_user_error([] { parse(kMinimal + "[model]\ndense_layers = 3\n"); },
                    {"model.dense_layers = 3", "model.n_layers (2)"});
  expect_user_error([] { parse(kMinimal + "[train]\nmin_lr = 0.01\n"); },
                    {"train.min_lr = 0.01", "train.lr (0.003)"});
  expect_user_error([] { parse(kMinimal + "[train]\nsteps = 10\nwarmup_steps = 20\n"); },
                    {"train.warmup_steps = 20", "train.steps (10)"});
  expect_user_error([] { parse(kMinimal + "[experts]\nsignal = \"adapters\"\n"); },
                    {"experts.adapter_rank = 0", "adapters"});
  expect_user_error([] { parse(kMinimal + "[sync]\nbackbone_sync = \"syncer\"\n"); },
                    {"topology.syncers = 0", "syncer"});
  expect_user_error([] { parse(kMinimal + "[sync]\nquorum = 2\n"); }, {"sync.quorum = 2", "topology.islands (1)"});
  expect_user_error([] { parse("[model]\nd_model = 64\n"); }, {"data.dir"});
}

TEST(Config, Overrides) {
  Config c = parse(kMinimal, {"model.top_k=1", "train.lr=1e-3", "train.mode=diloco",
                              "data.dir=\"other dir\"", "train.deterministic=false",
                              "sync.outer_dtype='int8'"});
  EXPECT_EQ(c.model.top_k, 1);
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-3);
  EXPECT_EQ(c.train.mode, px::TrainMode::DILOCO);
  EXPECT_EQ(c.data.dir, "other dir");
  EXPECT_FALSE(c.train.deterministic);
  EXPECT_EQ(c.sync.outer_dtype, px::WireDtype::INT8);
  EXPECT_EQ(parse(kMinimal, {" model.top_k = 1 "}).model.top_k, 1);  // spaces around key and value
  // Overrides are applied after the file.
  EXPECT_EQ(parse(kMinimal + "[model]\ntop_k = 1\n", {"model.top_k=3"}).model.top_k, 3);
  // ... and validated.
  expect_user_error([] { parse(kMinimal, {"model.top_k=12"}); }, {"model.top_k = 12"});
  expect_user_error([] { parse(kMinimal, {"model.topk=2"}); }, {"unknown key 'model.topk'", "model.top_k"});
  expect_user_error([] { parse(kMinimal, {"model.top_k"}); }, {"section.key=value"});
  expect_user_error([] { parse(kMinimal, {"model.top_k=two"}); }, {"model.top_k", "two", "integer"});
  expect_user_error([] { parse(kMinimal, {"model.top_k=2.5"}); }, {"model.top_k"});
  expect_user_error([] { parse(kMinimal, {"train.lr=abc"}); }, {"train.lr", "abc"});
  expect_user_error([] { parse(kMinimal, {"train.deterministic=yes"}); }, {"train.deterministic"});
  expect_user_error([] { parse(kMinimal, {"train.device=tpu"}); }, {"train.device", "tpu", "\"cuda\""});
}

TEST(Config, FilesAndSyntaxErrors) {
  expect_user_error([] { px::load_config("/nonexistent/cfg.toml"); }, {"/nonexistent/cfg.toml", "not found"});
  fs::path d = temp_dir("syntax");
  std::string bad = (d / "bad.toml").string();
  std::ofstream(bad) << "[model]\nd_model = 64\nn_layers = = 2\n";
  expect_user_error([&] { px::load_config(bad); }, {bad + ":3", "syntax"});
  fs::remove_all(d);
}

TEST(Config, RoundTrip) {
  Config c = px::load_config(kSrc + "/experiments/small.toml",
                             {"train.lr=0.00123456789", "data.dir=a \"quoted\" \\ dir",
                              "sync.mix_alpha=0.1", "experts.sparsity_2of8=true",
                              "model.balance=bias", "train.seed=0"});
  std::string text = px::config_to_toml(c);
  Config back = px::parse_config(text, "saved.toml");
  EXPECT_TRUE(back == c) << text;
  EXPECT_EQ(px::config_to_toml(back), text);

  fs::path d = temp_dir("save");
  std::string path = (d / "config.toml").string();
  px::save_config(c, path);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_TRUE(px::load_config(path) == c);
  fs::remove_all(d);
}

TEST(Config, EqualityCoversEveryField) {
  // Changing any one field through an override makes the configs differ, so operator== and
  // config_to_toml see every field of the table.
  Config base = parse(kMinimal);
  std::string text = px::config_to_toml(base);
  for (const auto& name : px::config_field_names())
    EXPECT_NE(text.find("\n" + name.substr(name.find('.') + 1) + " = "), std::string::npos) << name;
  Config other = base;
  px::apply_override(other, "experts.sketch_every=7");
  EXPECT_FALSE(other == base);
  px::apply_override(other, "experts.sketch_every=1");
  EXPECT_TRUE(other == base);
}

TEST(Config, CheckSupported) {
  Config c = parse(kMinimal);
  EXPECT_NO_THROW(px::check_supported(c));
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.mode=parallax", "topology.islands=2"})));
  EXPECT_NO_THROW(px::check_supported(
      parse(kMinimal, {"train.mode=parallax", "topology.islands=2", "topology.expert_workers=1"})));
  EXPECT_NO_THROW(px::check_supported(
      parse(kMinimal, {"train.mode=parallax", "experts.signal=adapters", "experts.adapter_rank=8"})));
  expect_user_error([] {
    px::check_supported(parse(kMinimal, {"train.mode=parallax", "experts.signal=adapters",
                                         "experts.adapter_rank=8", "topology.ranks_per_island=2"}));
  }, {"experts.signal = \"adapters\"", "ranks_per_island = 2"});
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.mode=parallax", "experts.view=lowrank"})));
  expect_user_error([] {
    px::check_supported(parse(kMinimal, {"train.mode=parallax", "model.n_layers=2", "model.dense_layers=1",
                                         "model.n_experts=4", "model.top_k=2", "topology.expert_workers=5"}));
  }, {"topology.expert_workers = 5", "more workers than routed experts"});
  expect_user_error([] {
    px::check_supported(parse(kMinimal, {"train.mode=parallax", "experts.adapter_rank=8"}));
  }, {"experts.adapter_rank = 8", "frozen views"});
  EXPECT_NO_THROW(px::check_supported(
      parse(kMinimal, {"train.mode=parallax", "topology.islands=2", "train.deterministic=false"})));
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"topology.islands=2"})));
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.mode=diloco", "topology.islands=2"})));
  expect_user_error([] { px::check_supported(parse(kMinimal, {"topology.expert_workers=1"})); },
                    {"topology.expert_workers = 1", "mode \"parallax\""});
  expect_user_error([] { px::check_supported(parse(kMinimal, {"sync.island_every=2"})); },
                    {"sync.island_every = 2", "needs train.mode = \"diloco\""});
  expect_user_error([] {
    px::check_supported(parse(kMinimal, {"topology.islands=4", "sync.quorum=3"}));
  }, {"sync.quorum = 3", "deterministic"});
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.device=cuda"})));
  // GPUs in every mode: diloco (islands of several ranks, syncers), parallax and expert-parallel
  // sync (routed experts on the host)
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.device=cuda", "train.mode=diloco",
                                                       "topology.islands=2", "topology.ranks_per_island=2"})));
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.device=cuda", "train.mode=diloco",
                                                       "topology.islands=2", "topology.syncers=1",
                                                       "sync.backbone_sync=syncer"})));
  // not built on the GPU yet: each refusal names what
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.device=cuda", "topology.islands=4"})));
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.device=cuda", "train.mode=parallax",
                                                       "topology.islands=2", "topology.expert_workers=1"})));
  expect_user_error([] {
    px::check_supported(parse(kMinimal, {"train.device=cuda", "train.micro_batches=2", "train.batch_size=4"}));
  }, {"train.device = \"cuda\"", "train.micro_batches = 2"});
}

// experts.home_device: parsed and printed back; mode parallax with sketches (or none) only, and
// each refusal names what is not built.
TEST(Config, HomeDevice) {
  const std::vector<std::string> base = {"train.mode=parallax", "topology.islands=2",
                                         "topology.expert_workers=1"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), base.begin(), base.end());
    return parse(kMinimal, more);
  };
  const Config c = with({"experts.home_device=cuda"});
  EXPECT_EQ(c.experts.home_device, px::DeviceKind::CUDA);
  EXPECT_NO_THROW(px::check_supported(c));
  EXPECT_TRUE(px::parse_config(px::config_to_toml(c), "back.toml") == c);
  EXPECT_NO_THROW(px::check_supported(with({"experts.home_device=staged", "experts.view=lowrank"})));
  expect_user_error([&] { px::check_supported(with({"experts.home_device=cuda", "experts.signal=adapters",
                                                    "experts.adapter_rank=4"})); },
                    {"experts.home_device = \"cuda\"", "adapters"});
  expect_user_error([&] { px::check_supported(with({"experts.home_device=staged", "experts.ternary_native=true"})); },
                    {"experts.home_device = \"staged\"", "ternary_native"});
  expect_user_error([&] { px::check_supported(with({"experts.home_device=cuda", "train.optimizer=sgd"})); },
                    {"experts.home_device", "adamw"});
  expect_user_error([] { px::check_supported(parse(kMinimal, {"experts.home_device=cuda"})); },
                    {"experts.home_device = \"cuda\"", "parallax"});
  expect_user_error([] { parse(kMinimal, {"experts.home_device=tpu"}); }, {"experts.home_device", "tpu"});
}

// experts.view = "full" (fp32 copies of the experts homed elsewhere): parsed and printed back;
// with signal "none" it is the SPES-style baseline, refused with expert workers (nothing would
// train their experts) and with several ranks per island (a home would learn from its rank's
// tokens only); with signal "sketches" (the upper-bound row) or "adapters" it is allowed;
// ternary_native needs view "ternary"; an unknown view names the choices.
TEST(Config, FullViewAndSpesBaseline) {
  const std::vector<std::string> spes = {"train.mode=parallax", "topology.islands=4",
                                         "experts.view=full", "experts.signal=none"};
  const Config c = parse(kMinimal, spes);
  EXPECT_EQ(c.experts.view, px::ViewKind::FULL);
  EXPECT_EQ(px::to_string(c.experts.view), "full");
  EXPECT_NO_THROW(px::check_supported(c));
  EXPECT_TRUE(px::parse_config(px::config_to_toml(c), "back.toml") == c);
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.mode=parallax", "topology.islands=2",
                                                       "topology.ranks_per_island=2", "experts.view=full",
                                                       "experts.signal=sketches"})));
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.mode=parallax", "topology.islands=2",
                                                       "topology.expert_workers=1", "experts.view=full"})));
  EXPECT_NO_THROW(px::check_supported(parse(kMinimal, {"train.mode=parallax", "experts.view=full",
                                                       "experts.signal=adapters", "experts.adapter_rank=4"})));
  expect_user_error([&] {
    auto ov = spes;
    ov.push_back("topology.expert_workers=1");
    px::check_supported(parse(kMinimal, ov));
  }, {"topology.expert_workers = 1", "experts.view = \"full\"", "experts.signal = \"none\"", "SPES"});
  expect_user_error([&] {
    auto ov = spes;
    ov.push_back("topology.ranks_per_island=2");
    px::check_supported(parse(kMinimal, ov));
  }, {"topology.ranks_per_island = 2", "experts.view = \"full\"", "use 1"});
  expect_user_error([] {
    px::check_supported(parse(kMinimal, {"train.mode=parallax", "experts.view=full",
                                         "experts.ternary_native=true"}));
  }, {"experts.ternary_native = true", "got view \"full\""});
  expect_user_error([] { parse(kMinimal, {"experts.view=fp32"}); },
                    {"experts.view = \"fp32\"", "ternary", "lowrank", "full"});
}

// topology.pipeline_stages: P stages of R / P ranks, modes sync, diloco and parallax (expert
// workers, sketches) on the CPU; the other
// combinations are refused, naming the fields.
TEST(Config, PipelineStages) {
  const std::vector<std::string> two = {"model.n_layers=4", "topology.ranks_per_island=2",
                                        "topology.pipeline_stages=2"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), two.begin(), two.end());
    return parse(kMinimal, more);
  };
  EXPECT_EQ(with({}).topology.pipeline_stages, 2);
  EXPECT_NO_THROW(with({"train.mode=diloco", "topology.islands=2"}));
  expect_user_error([&] { parse(kMinimal, {"model.n_layers=4", "topology.pipeline_stages=5"}); },
                    {"topology.pipeline_stages = 5", "model.n_layers (4)"});
  EXPECT_NO_THROW(with({"topology.ranks_per_island=4"}));  // 2 stages of 2 ranks
  expect_user_error([&] { with({"topology.ranks_per_island=3"}); },
                    {"topology.pipeline_stages = 2", "must divide topology.ranks_per_island = 3"});
  // mode parallax: with expert workers and the sketch (or no) signal
  EXPECT_NO_THROW(with({"train.mode=parallax", "topology.expert_workers=1"}));
  EXPECT_NO_THROW(with({"train.mode=parallax", "topology.expert_workers=1", "experts.signal=none"}));
  expect_user_error([&] { with({"train.mode=parallax"}); },
                    {"topology.pipeline_stages = 2", "mode \"parallax\"", "topology.expert_workers > 0"});
  expect_user_error([&] { with({"train.mode=parallax", "topology.expert_workers=1", "experts.signal=adapters"}); },
                    {"topology.pipeline_stages = 2", "experts.signal = \"adapters\""});
  EXPECT_NO_THROW(with({"train.zero=1", "topology.ranks_per_island=4"}));  // ZeRO-1 in a stage
  EXPECT_NO_THROW(with({"topology.pipeline_split=ends"}));
  expect_user_error([&] { with({"topology.ranks_per_island=4", "topology.pipeline_stages=4", "topology.pipeline_split=ends"}); },
                    {"topology.pipeline_split = \"ends\"", "4 stages", "stage 3 without a layer"});
  EXPECT_NO_THROW(with({"train.mode=diloco", "topology.syncers=1", "sync.backbone_sync=syncer"}));
}
