// End-to-end training on real text (the fortunes corpus): learning, exact resume, and the
// command line's handling of bad input (exit code 2, nothing half-written).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <chrono>
#include <csignal>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "config/config.hpp"
#include "data/prepare.hpp"
#include "data/token_shards.hpp"
#include "checkpoint/resume.hpp"   // defines: load_model_params
#include "io/checkpoint_file.hpp"  // defines: newest_checkpoint
#include "io/h5.hpp"
#include "model/moe_model.hpp"
#include "train/assembled_eval.hpp"
#include "train/trainer.hpp"
#include "util/errors.hpp"

namespace fs = std::filesystem;
using namespace px;

namespace {

const char* kCorpus = "/usr/share/games/fortunes";

std::string tmp_dir(const std::string& name) {
  const std::string d = std::string(PX_BINARY_DIR) + "/test_tmp/train_" + name + "_" +
                        std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Data prepared once for all tests of this file.
const std::string& corpus_dir() {
  static std::string dir = [] {
    EXPECT_TRUE(fs::is_directory(kCorpus)) << kCorpus << " missing: run scripts/setup.sh";
    const std::string d = tmp_dir("corpus");
    data_prepare({kCorpus}, d, 512);
    return d;
  }();
  return dir;
}

Config tiny_config(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> ov = {"data.dir=" + corpus_dir()};
  ov.insert(ov.end(), extra.begin(), extra.end());
  return load_config(std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml", ov);
}

// Cross-entropy (nats/token) of the validation tokens under the add-one-smoothed unigram
// distribution of the training tokens: what a model that ignores context can reach.
double unigram_entropy(const std::string& dir, int vocab) {
  TokenSplit tr(dir, "train"), va(dir, "val");
  std::vector<double> count(vocab, 1.0);
  for (int32_t t : tr.tokens()) count[t] += 1;
  double total = 0;
  for (double c : count) total += c;
  double h = 0;
  for (int32_t t : va.tokens()) h -= std::log(count[t] / total);
  return h / va.size();
}

int run_cli(const std::string& args) {
  const std::string cmd = std::string(PX_BINARY_DIR) + "/parallax " + args + " > /dev/null 2>&1";
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

TEST(TrainTiny, ValidationLossFallsWellBelowUnigramEntropy) {
  const Config cfg = tiny_config();
  TrainOptions opt;
  opt.run_dir = tmp_dir("learn");
  opt.quiet = true;
  const TrainResult r = train(cfg, opt);
  ASSERT_GE(r.evals.size(), 2u);
  const double h1 = unigram_entropy(corpus_dir(), cfg.model.vocab);
  const double first = r.evals.front().second, last = r.evals.back().second;
  std::printf("validation loss %.4f -> %.4f, unigram entropy %.4f nats\n", first, last, h1);
  EXPECT_GT(first, h1);           // an untrained model is worse than unigram statistics
  EXPECT_LT(last, h1 - 0.5);      // a trained one is clearly better: it uses context
  EXPECT_TRUE(fs::exists(opt.run_dir + "/metrics.h5"));
  EXPECT_TRUE(fs::exists(opt.run_dir + "/metrics.jsonl"));
  EXPECT_TRUE(fs::exists(opt.run_dir + "/config.toml"));
}

// A checkpoint written with another train.zero (its moments sharded another way) is refused
// with a message naming the field and the value to resume with.
TEST(TrainResume, AnotherZeroStageIsRefused) {
  TrainOptions opt;
  opt.quiet = true;
  opt.run_dir = tmp_dir("resume_zero");
  const std::vector<std::string> ov = {"train.steps=4", "train.warmup_steps=1", "checkpoint.every=4",
                                       "data.eval_every=0"};
  train(tiny_config(ov), opt);
  auto more = ov;
  more.insert(more.end(), {"train.steps=8", "train.zero=1"});
  opt.resume = true;
  try {
    train(tiny_config(more), opt);
    FAIL() << "a checkpoint of train.zero = 0 resumed with train.zero = 1";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("resume with train.zero = 0"), std::string::npos) << e.what();
  }
}

TEST(TrainResume, BitIdenticalLossesAfterResume) {
  const Config cfg = tiny_config({"train.steps=40", "checkpoint.every=20", "data.eval_every=20",
                                  "log.every=5", "model.balance=\"bias\""});
  TrainOptions full;
  full.run_dir = tmp_dir("resume_full");
  full.quiet = true;
  const TrainResult a = train(cfg, full);
  ASSERT_EQ(a.losses.size(), 40u);

  TrainOptions part = full;
  part.run_dir = tmp_dir("resume_part");
  part.stop_after = 23;  // not a checkpoint step of the full run: stop writes its own
  const TrainResult b1 = train(cfg, part);
  ASSERT_EQ(b1.end_step, 23);
  part.stop_after = -1;
  part.resume = true;
  const TrainResult b2 = train(cfg, part);
  ASSERT_EQ(b2.start_step, 23);
  ASSERT_EQ(b2.losses.size(), 17u);
  for (size_t i = 0; i < 17; ++i)
    EXPECT_EQ(a.losses[23 + i], b2.losses[i]) << "step " << 23 + i + 1;  // bit-identical
  EXPECT_EQ(a.evals.back().second, b2.evals.back().second);
  // resuming without --resume into a run dir with checkpoints is refused
  part.resume = false;
  EXPECT_THROW(train(cfg, part), UserError);
}

// data.eval_without_routed: each validation pass also runs with the routed experts' outputs
// left out; it does not perturb training (bit-identical losses and evaluations), and a trained
// sync model relies on its routed experts (leaving them out costs loss; little this early).
TEST(TrainEval, WithoutRoutedExpertsIsAnAblationThatChangesNothingElse) {
  const std::vector<std::string> ov = {"train.steps=300", "data.eval_every=150", "checkpoint.every=0"};
  TrainOptions opt;
  opt.quiet = true;
  opt.run_dir = tmp_dir("eval_plain");
  const TrainResult plain = train(tiny_config(ov), opt);
  auto with_ablation = ov;
  with_ablation.push_back("data.eval_without_routed=true");
  opt.run_dir = tmp_dir("eval_ablation");
  const TrainResult r = train(tiny_config(with_ablation), opt);
  EXPECT_EQ(r.losses, plain.losses);
  EXPECT_EQ(r.evals, plain.evals);
  EXPECT_TRUE(plain.evals_without_routed.empty());
  ASSERT_EQ(r.evals_without_routed.size(), r.evals.size());
  const double gap = r.evals_without_routed.back().second - r.evals.back().second;
  std::printf("eval loss %.4f, without routed experts %.4f (%+.4f)\n", r.evals.back().second,
              r.evals_without_routed.back().second, gap);
  EXPECT_GT(gap, 0.0);  // a different model: the routed experts carry something (0.0038 nats here)
}

// `parallax eval` of a run's last checkpoint is the model the run ended with: one rank, so the
// assembled model is the trained one and its loss equals the run's last evaluation.
TEST(TrainEval, AssembledModelOfAOneRankRunIsItsLastEvaluation) {
  TrainOptions opt;
  opt.quiet = true;
  opt.run_dir = tmp_dir("eval_assembled");
  const TrainResult r = train(tiny_config({"train.steps=40", "data.eval_every=20", "checkpoint.every=0"}), opt);
  const AssembledEval e = evaluate_checkpoint(opt.run_dir, "", 0);
  EXPECT_EQ(e.step, 40);
  EXPECT_FALSE(e.global_backbone);
  ASSERT_FALSE(r.evals.empty());
  EXPECT_NEAR(e.loss, r.evals.back().second, 1e-9);
  EXPECT_EQ(e.loss, e.loss_island0);
  // fewer batches: another number; no checkpoint: a user error naming the folder
  EXPECT_NE(evaluate_checkpoint(opt.run_dir, "", 1).loss, e.loss);
  // without island 0's pass: the same assembled loss, no island-0 number
  const AssembledEval only = evaluate_checkpoint(opt.run_dir, "", 0, false);
  EXPECT_EQ(only.loss, e.loss);
  EXPECT_TRUE(std::isnan(only.loss_island0));
  EXPECT_THROW(evaluate_checkpoint(tmp_dir("eval_nothing"), "", 0), UserError);
}

// A divergent learning rate: non-finite steps are skipped, the run stops after
// train.max_skipped_steps of them in a row with a user error, and its last checkpoint holds
// the finite parameters of the last good step.
TEST(TrainDivergence, SkipsNonFiniteStepsThenStopsWithoutCheckpointingNaN) {
  const Config cfg = tiny_config({"train.optimizer=\"sgd\"", "train.lr=10", "train.min_lr=10",
                                  "train.warmup_steps=0", "train.grad_clip=0", "train.steps=200",
                                  "train.max_skipped_steps=3", "data.eval_every=0",
                                  "checkpoint.every=0", "log.every=1"});
  TrainOptions opt;
  opt.quiet = true;
  opt.run_dir = tmp_dir("diverged");
  std::string message;
  try {
    train(cfg, opt);
  } catch (const UserError& e) {
    message = e.what();
  }
  ASSERT_NE(message.find("training diverged at step"), std::string::npos) << message;
  const auto ckpt = newest_checkpoint(opt.run_dir + "/checkpoints");
  ASSERT_TRUE(ckpt.has_value());
  MoeModel<float> model(cfg.model, 1, 2);
  load_model_params(*ckpt, model);
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS})
    for (size_t i = 0; i < model.layout().size(a); ++i)
      ASSERT_TRUE(std::isfinite(model.params(a)[i])) << "parameter " << i << " is not finite";
}

// Run-folder faults: an --out that cannot be created is a user error (exit 2); a refused resume
// leaves config.toml as it was; a run killed before its first checkpoint and started again
// keeps no row of the killed attempt (one step-0 evaluation, not two).
TEST(TrainRunFolder, UnwritableOutRefusedResumeAndRestartLeaveNoDebris) {
  const std::string d = tmp_dir("run_folder");
  const std::string tiny = std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml";
  const std::string data = " data.dir=" + corpus_dir();
  EXPECT_EQ(run_cli("train " + tiny + " --out /proc/parallax_run" + data), 2);
  {
    std::ofstream f(d + "/a_file");
  }
  EXPECT_EQ(run_cli("train " + tiny + " --out " + d + "/a_file/run" + data), 2);
  const std::string run = d + "/run", few = " train.steps=12 train.warmup_steps=2 data.eval_every=6";
  ASSERT_EQ(run_cli("train " + tiny + " --out " + run + data + few), 0);
  std::ifstream before_file(run + "/config.toml");
  const std::string before((std::istreambuf_iterator<char>(before_file)), {});
  EXPECT_EQ(run_cli("train " + tiny + " --out " + run + " --resume" + data + few + " model.d_model=32"), 2);
  std::ifstream after_file(run + "/config.toml");
  const std::string after((std::istreambuf_iterator<char>(after_file)), {});
  EXPECT_EQ(before, after) << "a refused resume rewrote config.toml";
  fs::remove_all(run + "/checkpoints");  // as if killed before its first checkpoint
  ASSERT_EQ(run_cli("train " + tiny + " --out " + run + " --resume" + data + few), 0);
  h5::File f = h5::open_file(run + "/metrics.h5", false);
  EXPECT_EQ(h5::read_array<int64_t>(f, "/eval/step"), (std::vector<int64_t>{0, 6, 12}));
  EXPECT_EQ(h5::read_array<int64_t>(f, "/train/step").front(), 10);
}

// Slurm's pre-emption warning (SIGUSR1): the run checkpoints at the next step and stops, and
// --resume continues from there.
class TrainPreemption : public ::testing::TestWithParam<int> {};

TEST_P(TrainPreemption, SignalCheckpointsAndStops) {
  const int sig = GetParam();
  const Config cfg = tiny_config({"train.steps=5000", "data.eval_every=0", "checkpoint.every=0",
                                  "log.every=50"});
  TrainOptions opt;
  opt.run_dir = tmp_dir("preempt");
  opt.quiet = true;
  install_preemption_handler();
  std::thread killer([sig] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::raise(sig);
  });
  const TrainResult a = train(cfg, opt);
  killer.join();
  ASSERT_LT(a.end_step, 5000) << "the run did not stop on signal " << sig;
  EXPECT_TRUE(fs::exists(opt.run_dir + "/checkpoints/" +
                         fmt::format("step_{:08d}.h5", a.end_step)));
  opt.resume = true;
  opt.stop_after = a.end_step + 5;
  const TrainResult b = train(cfg, opt);
  EXPECT_EQ(b.start_step, a.end_step);
  EXPECT_EQ(b.end_step, a.end_step + 5);
}

INSTANTIATE_TEST_SUITE_P(Signals, TrainPreemption, ::testing::Values(SIGUSR1, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == SIGTERM ? "sigterm" : "sigusr1");
                         });

TEST(TrainCli, BadInputExitsWithTwo) {
  const std::string d = tmp_dir("cli");
  const std::string tiny = std::string(PX_SOURCE_DIR) + "/experiments/tiny.toml";
  {
    std::ofstream f(d + "/bad.toml");
    f << "[model]\nd_modle = 64\n";
  }
  EXPECT_EQ(run_cli("config " + d + "/bad.toml"), 2);                       // unknown key
  EXPECT_EQ(run_cli("config " + tiny + " model.n_heads=5"), 2);              // d % heads
  EXPECT_EQ(run_cli("config " + tiny + " train.lr=-1"), 2);                  // range
  EXPECT_EQ(run_cli("config " + d + "/missing.toml"), 2);                    // missing file
  EXPECT_EQ(run_cli("config " + tiny + " --print"), 0);
  EXPECT_EQ(run_cli("train " + tiny + " --out " + d + "/run data.dir=" + d + "/nodata"), 2);
  EXPECT_FALSE(fs::exists(d + "/run"));  // nothing half-written for a bad data path
  // device = "cuda" without a GPU (CI) or without a CUDA build: a clear error, nothing written
  EXPECT_EQ(run_cli("train " + tiny + " --out " + d + "/gpu data.dir=" + corpus_dir() +
                    " train.device=cuda"),
            ::getenv("PX_EXPECT_GPU") ? 0 : 2);
  if (!::getenv("PX_EXPECT_GPU")) EXPECT_FALSE(fs::exists(d + "/gpu"));
  // parallax settings that are refused: a message, exit 2, nothing written
  EXPECT_EQ(run_cli("train " + tiny + " --out " + d + "/px data.dir=" + corpus_dir() +
                    " train.mode=parallax topology.expert_workers=100"), 2);  // > routed experts
  EXPECT_EQ(run_cli("train " + tiny + " --out " + d + "/px data.dir=" + corpus_dir() +
                    " train.mode=parallax experts.adapter_rank=4"), 2);  // adapters under sketches
  EXPECT_FALSE(fs::exists(d + "/px"));
  EXPECT_EQ(run_cli("data prepare --input " + d + "/nothing.txt --out " + d + "/o"), 2);
  EXPECT_EQ(run_cli("data prepare --input " + tiny + " --out " + d + "/o --vocab 100"), 2);
  {
    std::ofstream f(d + "/empty.txt");
  }
  EXPECT_EQ(run_cli("data prepare --input " + d + "/empty.txt --out " + d + "/o"), 2);
  // a corrupted checkpoint: a clear error, not a crash
  {
    std::ofstream f(d + "/step_00000010.h5", std::ios::binary);
    f << "this is not an HDF5 file";
  }
  EXPECT_EQ(run_cli("sample " + d + "/step_00000010.h5 --prompt hi"), 2);
}

TEST(TrainCli, CorruptedNewestCheckpointIsSkippedOnResume) {
  const Config cfg = tiny_config({"train.steps=20", "train.warmup_steps=5", "checkpoint.every=10", "data.eval_every=0",
                                  "checkpoint.keep=0"});
  TrainOptions opt;
  opt.run_dir = tmp_dir("corrupt");
  opt.quiet = true;
  opt.stop_after = 20;
  const TrainResult a = train(cfg, opt);
  // truncate the newest checkpoint (as a crash during a non-atomic copy would)
  const std::string newest = opt.run_dir + "/checkpoints/step_00000020.h5";
  ASSERT_TRUE(fs::exists(newest));
  fs::resize_file(newest, fs::file_size(newest) / 2);
  opt.resume = true;
  opt.stop_after = -1;
  const TrainResult b = train(cfg, opt);
  EXPECT_EQ(b.start_step, 10);  // fell back to the older complete checkpoint
  for (size_t i = 0; i < b.losses.size(); ++i) EXPECT_EQ(a.losses[10 + i], b.losses[i]);
}
