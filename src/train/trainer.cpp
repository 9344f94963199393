// One-rank training loop: step, log (loss, lr, tokens/s, ETA), evaluate, checkpoint, resume.
#include "train/trainer.hpp"

#include <fmt/format.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mpi.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "data/token_shards.hpp"   // defines: TokenSplit, TokenLoader
#include "io/checkpoint_file.hpp"  // defines: newest_checkpoint
#include "io/metrics_writer.hpp"   // defines: MetricsWriter
#include "optim/lr_schedule.hpp"   // defines: lr_at
#include "train/train_state.hpp"   // defines: TrainState, save_checkpoint, load_checkpoint
#include "util/errors.hpp"         // defines: UserError

namespace px {

namespace fs = std::filesystem;

namespace {

// Peak resident set size of this process (VmHWM), in bytes.
int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

std::string fmt_duration(double s) {
  const int64_t t = (int64_t)s;
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (int)(t % 3600 / 60));
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, (int)(t % 60));
  return fmt::format("{:.1f}s", s);
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& run_dir, bool quiet) {
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(run_dir + "/logs/rank0.log");
  std::vector<spdlog::sink_ptr> sinks{file};
  if (!quiet) sinks.push_back(std::make_shared<spdlog::sinks::stdout_color_sink_mt>());
  auto lg = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  lg->set_pattern("[%H:%M:%S] %v");
  lg->flush_on(spdlog::level::info);
  return lg;
}

double evaluate(MoeModel<float>& model, const TokenLoader& val, int batches, int B, int T,
                std::vector<int32_t>& in, std::vector<int32_t>& tg) {
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    val.eval_batch(b, B, T, in.data(), tg.data());
    model.forward(in.data(), tg.data());
    sum += model.last_ce();
  }
  return sum / batches;
}

}  // namespace

TrainResult train(const Config& cfg, const TrainOptions& opt) {
  check_supported(cfg);
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const TopologyConfig& tp = cfg.topology;
  const int want = tp.islands * tp.ranks_per_island + tp.syncers + tp.expert_workers;
  if (world != want)
    throw UserError(fmt::format("world size {} does not match [topology]: islands {} x "
                                "ranks_per_island {} + syncers {} + expert_workers {} = {}",
                                world, tp.islands, tp.ranks_per_island, tp.syncers,
                                tp.expert_workers, want));
  const ModelConfig& mc = cfg.model;
  const int B = cfg.train.batch_size, T = mc.seq_len;
  const std::string run_dir = opt.run_dir, ckpt_dir = run_dir + "/checkpoints";
  // data first: a wrong path fails before anything is written
  TokenSplit train_split(cfg.data.dir, "train");
  TokenSplit val_split(cfg.data.dir, "val");
  if (train_split.vocab_size() > mc.vocab)
    throw UserError(fmt::format("model.vocab = {}: the tokenizer in {} has {} tokens; set "
                                "model.vocab >= {}",
                                mc.vocab, cfg.data.dir, train_split.vocab_size(),
                                train_split.vocab_size()));
  const BpeTokenizer tok = BpeTokenizer::load(cfg.data.dir + "/tokenizer.h5");
  TokenLoader loader(train_split, T);
  TokenLoader val_loader(val_split, T);

  fs::create_directories(run_dir + "/logs");
  fs::create_directories(ckpt_dir);

  MoeModel<float> model(mc, B, T);
  model.init_params((uint64_t)cfg.train.seed);
  AdamWConfig ac;
  ac.weight_decay = cfg.train.weight_decay;
  ac.grad_clip = cfg.train.grad_clip;
  AdamW adamw(model.layout(), ac);
  TrainState st{model, adamw};

  auto log = make_logger(run_dir, opt.quiet);
  TrainResult res;
  if (opt.resume) {
    const auto ck = newest_checkpoint(ckpt_dir);
    if (!ck) {
      log->info("resume: no complete checkpoint in {}, starting from step 0", ckpt_dir);
    } else {
      load_checkpoint(*ck, cfg, st);
      loader.set_cursor(st.data_cursor);
      log->info("resumed from {} (step {})", *ck, st.step);
    }
  } else if (newest_checkpoint(ckpt_dir)) {
    throw UserError(fmt::format("{} already holds checkpoints: pass --resume to continue that "
                                "run, or choose another --out",
                                ckpt_dir));
  }
  save_config(cfg, run_dir + "/config.toml");
  MetricsWriter metrics(run_dir);
  metrics.truncate_after_step(st.step);
  res.start_step = st.step;

  const size_t nb = model.layout().backbone_size, ne = model.layout().experts_size;
  log->info("model: {} backbone + {} expert parameters ({:.2f} M), {} MoE layers x {} experts, "
            "activations {:.1f} MB",
            nb, ne, (nb + ne) / 1e6, mc.moe_layers(), mc.n_experts,
            model.activation_bytes() / 1e6);
  log->info("data: {} train tokens, {} validation tokens; {} steps x {} tokens", train_split.size(),
            val_split.size(), cfg.train.steps, B * T);

  std::vector<int32_t> in((size_t)B * T), tg((size_t)B * T);
  std::vector<int64_t> load((size_t)mc.moe_layers() * mc.n_experts, 0);
  float* const P[2] = {model.params(Arena::BACKBONE), model.params(Arena::EXPERTS)};
  float* const G[2] = {model.grads(Arena::BACKBONE), model.grads(Arena::EXPERTS)};
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto t_int = t0;
  double loss_sum = 0, aux_sum = 0, gnorm = 0;
  int n_int = 0;
  int64_t tokens_int = 0;
  const int64_t steps = cfg.train.steps;
  auto do_eval = [&](int64_t step) {
    const double vl = evaluate(model, val_loader, cfg.data.eval_batches, B, T, in, tg);
    metrics.append("/eval/step", step);
    metrics.append("/eval/loss", vl);
    res.evals.emplace_back(step, vl);
    log->info("step {:>6} | eval loss {:.4f}", step, vl);
    return vl;
  };
  if (st.step == 0 && cfg.data.eval_every > 0) do_eval(0);

  while (st.step < steps) {
    const double lr = lr_at((int)st.step, (int)steps, (int)cfg.train.warmup_steps, cfg.train.lr,
                            cfg.train.min_lr);
    loader.next_batch(B, T, in.data(), tg.data());
    model.zero_grad();
    const double loss = model.forward(in.data(), tg.data());
    model.backward();
    gnorm = adamw.step(P, G, lr);
    const auto counts = model.expert_counts();
    model.update_router_bias(counts);
    for (size_t i = 0; i < load.size(); ++i) load[i] += counts[i];
    ++st.step;
    st.tokens += (int64_t)B * T;
    st.data_cursor = loader.cursor();
    res.losses.push_back(loss);
    loss_sum += model.last_ce();
    aux_sum += model.last_aux();
    tokens_int += (int64_t)B * T;
    ++n_int;

    const bool last = st.step == steps || st.step == opt.stop_after;
    if (st.step % cfg.log.every == 0 || last) {
      const auto now = clock::now();
      const double dt = std::chrono::duration<double>(now - t_int).count();
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const double tps = tokens_int / std::max(dt, 1e-9);
      const double eta = elapsed / (st.step - res.start_step) * (steps - st.step);
      const double ce = loss_sum / n_int, aux = aux_sum / n_int;
      log->info("step {:>6}/{} | loss {:.4f} | aux {:.4f} | lr {:.2e} | gnorm {:.3f} | "
                "{:.0f} tok/s | ETA {}",
                st.step, steps, ce, aux, lr, gnorm, tps, fmt_duration(eta));
      metrics.append("/train/step", st.step);
      metrics.append("/train/loss", ce);
      metrics.append("/train/aux_loss", aux);
      metrics.append("/train/lr", lr);
      metrics.append("/train/tokens", st.tokens);
      metrics.append("/train/time_s", elapsed);
      metrics.append("/train/tokens_per_s", tps);
      metrics.append("/train/grad_norm", gnorm);
      metrics.append_row("/experts/load", load,
                         {(hsize_t)mc.moe_layers(), (hsize_t)mc.n_experts});
      metrics.append_row("/memory/peak_bytes", std::vector<int64_t>{peak_rss_bytes()}, {1});
      metrics.log_jsonl({{"step", (double)st.step},
                         {"loss", ce},
                         {"aux_loss", aux},
                         {"lr", lr},
                         {"grad_norm", gnorm},
                         {"tokens", (double)st.tokens},
                         {"tokens_per_s", tps},
                         {"time_s", elapsed}});
      std::fill(load.begin(), load.end(), 0);
      loss_sum = aux_sum = 0;
      n_int = 0;
      tokens_int = 0;
      t_int = now;
    }
    if (cfg.data.eval_every > 0 && (st.step % cfg.data.eval_every == 0 || last)) do_eval(st.step);
    if ((cfg.checkpoint.every > 0 && st.step % cfg.checkpoint.every == 0) || last) {
      const std::string p = save_checkpoint(ckpt_dir, cfg, st, tok, cfg.checkpoint.keep);
      log->info("checkpoint {}", p);
    }
    metrics.flush();
    if (st.step == opt.stop_after) break;
  }
  res.end_step = st.step;
  res.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  if (!res.evals.empty())
    log->info("done: {} steps in {} | validation loss {:.4f} (first {:.4f}) | metrics {} | "
              "checkpoints {}",
              st.step - res.start_step, fmt_duration(res.seconds), res.evals.back().second,
              res.evals.front().second, metrics.h5_path(), ckpt_dir);
  return res;
}

}  // namespace px
