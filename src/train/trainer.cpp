// The training run: roles, the learner loop (step, outer sync, log, evaluate, checkpoint,
// resume) and the syncer loop.
#include "train/trainer.hpp"

#include <fmt/format.h>
#include <mpi.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "data/token_shards.hpp"    // defines: TokenSplit, TokenLoader
#include "io/checkpoint_file.hpp"   // defines: newest_checkpoint
#include "io/metrics_writer.hpp"    // defines: MetricsWriter
#include "optim/lr_schedule.hpp"    // defines: lr_at
#include "parallel/expert_placement.hpp"  // defines: experts_homed_at
#include "parallel/topology.hpp"    // defines: Topology, Communicators
#include "sync/expert_tier.hpp"     // defines: ExpertTier, ExpertHome, ExpertViews
#include "train/expert_adapters.hpp"  // defines: ExpertAdapters
#include "train/expert_worker.hpp"  // defines: run_expert_worker
#include "train/train_state.hpp"    // defines: Progress, add_learner_state, commit_checkpoint
#include "util/errors.hpp"          // defines: UserError

namespace px {

namespace fs = std::filesystem;

namespace {

std::atomic<int> g_preempted{0};

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

std::shared_ptr<spdlog::logger> make_logger(const std::string& run_dir, int rank, bool console) {
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(
      fmt::format("{}/logs/rank{}.log", run_dir, rank));
  std::vector<spdlog::sink_ptr> sinks{file};
  if (console) sinks.push_back(std::make_shared<spdlog::sinks::stdout_color_sink_mt>());
  auto lg = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  lg->set_pattern("[%H:%M:%S] %v");
  lg->flush_on(spdlog::level::info);
  return lg;
}

// The newest complete checkpoint, agreed by every rank (rank 0 looks, then broadcasts).
std::string agreed_checkpoint(MPI_Comm world, const std::string& dir, int rank) {
  std::string p;
  if (rank == 0) p = newest_checkpoint(dir).value_or("");
  int n = (int)p.size();
  MPI_Bcast(&n, 1, MPI_INT, 0, world);
  p.resize(n);
  MPI_Bcast(p.data(), n, MPI_CHAR, 0, world);
  return p;
}

// Runs fn on every rank; when it throws UserError on any rank, every rank throws the message
// of the lowest failing rank (so none is left waiting in a collective and rank 0 prints it).
template <class Fn>
void on_all_ranks(MPI_Comm world, Fn fn) {
  std::string err;
  try {
    fn();
  } catch (const UserError& e) {
    err = e.what();
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  int mine = err.empty() ? size : rank, first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
  if (first == size) return;
  int n = (int)err.size();
  MPI_Bcast(&n, 1, MPI_INT, first, world);
  err.resize(n);
  MPI_Bcast(err.data(), n, MPI_CHAR, first, world);
  throw UserError(err);
}

void append_comm_rows(MetricsWriter& m, const std::vector<std::vector<int64_t>>& per_tier) {
  for (int t = 0; t < kTierCount; ++t)
    m.append_row(fmt::format("/comm/{}/bytes", tier_name((Tier)t)), per_tier[t],
                 {(hsize_t)per_tier[t].size()});
}

// Every rank of comm gets the mean of their parameters (both arenas).
void average_over(Comm& comm, MoeModel<float>& m) {
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    float* p = m.params(a);
    const size_t n = m.layout().size(a);
    comm.allreduce_sum(p, (int64_t)n, Tier::ISLAND);
    const float inv = 1.f / (float)comm.size();
    for (size_t i = 0; i < n; ++i) p[i] *= inv;
  }
}

}  // namespace

void install_preemption_handler() {
  std::signal(SIGUSR1, [](int) { g_preempted = 1; });
}

TrainResult train(const Config& cfg, const TrainOptions& opt) {
  check_supported(cfg);
  g_preempted = 0;
  const MPI_Comm world = opt.world;
  int wrank = 0, wsize = 1;
  MPI_Comm_rank(world, &wrank);
  MPI_Comm_size(world, &wsize);
  const TopologyConfig& tc = cfg.topology;
  const Topology topo =
      Topology::make(tc.islands, tc.ranks_per_island, tc.syncers, tc.expert_workers, wrank, wsize);
  const ModelConfig& mc = cfg.model;
  const int B = cfg.train.batch_size, T = mc.seq_len, I = topo.islands,
            R = topo.ranks_per_island, NL = topo.learners();
  const bool sync_mode = cfg.train.mode == TrainMode::SYNC;
  const std::string run_dir = opt.run_dir, ckpt_dir = run_dir + "/checkpoints";

  // data and run folder checks, on every rank, before anything is written
  const int part = topo.is_learner() ? topo.learner_rank(topo.island, topo.local_rank) : 0;
  std::unique_ptr<TokenSplit> train_split, val_split;
  std::unique_ptr<BpeTokenizer> tok;
  on_all_ranks(world, [&] {
    if (cfg.train.device == DeviceKind::CUDA) GpuStepper::require();
    if (topo.role == Role::EXPERT_WORKER) return;  // workers never see the data (DESIGN §1)
    val_split = std::make_unique<TokenSplit>(cfg.data.dir, "val");
    train_split = std::make_unique<TokenSplit>(cfg.data.dir, "train", part, NL);
    if (train_split->vocab_size() > mc.vocab)
      throw UserError(fmt::format("model.vocab = {}: the tokenizer in {} has {} tokens; set "
                                  "model.vocab >= {}",
                                  mc.vocab, cfg.data.dir, train_split->vocab_size(),
                                  train_split->vocab_size()));
    if (wrank == 0) tok = std::make_unique<BpeTokenizer>(BpeTokenizer::load(cfg.data.dir + "/tokenizer.h5"));
    if (!opt.resume && wrank == 0 && newest_checkpoint(ckpt_dir))
      throw UserError(fmt::format("{} already holds checkpoints: pass --resume to continue that "
                                  "run, or choose another --out",
                                  ckpt_dir));
  });
  if (wrank == 0) {
    fs::create_directories(run_dir + "/logs");
    fs::create_directories(ckpt_dir);
    save_config(cfg, run_dir + "/config.toml");
  }
  MPI_Barrier(world);
  auto log = make_logger(run_dir, wrank, wrank == 0 && !opt.quiet);
  const std::string resume_from = opt.resume ? agreed_checkpoint(world, ckpt_dir, wrank) : "";
  if (!resume_from.empty()) on_all_ranks(world, [&] { check_resume_compatible(resume_from, cfg); });

  Communicators comms = Communicators::split(topo, world);
  CommStats stats;
  Comm p2p(comms.p2p, stats);
  TrainResult res;
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();

  if (topo.role == Role::SYNCER) {
    Syncer syncer(cfg, topo, p2p);
    if (!resume_from.empty()) load_syncer_state(resume_from, wrank, syncer);
    syncer.run([&](int64_t step) {
      ParallelCheckpointWriter w;
      add_syncer_state(w, syncer);
      commit_checkpoint(world, w, ckpt_dir, cfg, step, nullptr, cfg.checkpoint.keep);
    });
    log->info("syncer {}: {} merges", topo.syncer_index, syncer.merges());
    stats.gather_to_root(world);
    return res;
  }

  if (topo.role == Role::EXPERT_WORKER) {
    run_expert_worker(cfg, topo, p2p, world, ckpt_dir, resume_from, *log);
    stats.gather_to_root(world);
    return res;
  }

  // ---- learner
  Comm learners(comms.learners, stats), island(comms.island, stats), peers(comms.peers, stats),
      self(MPI_COMM_SELF, stats);
  // hierarchical variant (island_every > 1): the island's ranks train on their own and average
  // parameters every island_every steps (a DiLoCo inner tier with outer lr 1, no momentum)
  const int K = cfg.sync.island_every;
  Learner L(cfg, sync_mode ? learners : (K > 1 ? self : island), sync_mode, B, &topo);
  std::unique_ptr<OuterSync> outer;
  if (!sync_mode) outer = std::make_unique<OuterSync>(cfg, topo, L.model(), peers, island, p2p);
  // mode parallax: the expert tiers, and the experts this rank homes (if any)
  std::unique_ptr<ExpertTier> tier;
  std::unique_ptr<ExpertHome> home;
  std::unique_ptr<ExpertAdapters> adapters;
  std::unique_ptr<ExpertViews> views;
  if (cfg.train.mode == TrainMode::PARALLAX) {
    tier = std::make_unique<ExpertTier>(cfg, topo, p2p);
    auto mine = experts_homed_at(topo, wrank, mc.moe_layers(), mc.n_experts);
    if (!mine.empty())
      home = std::make_unique<ExpertHome>(cfg, L.model().layout(), std::move(mine),
                                          L.model().params(Arena::EXPERTS));
    // every expert homed elsewhere becomes its compact view (a resume overwrites them)
    views = std::make_unique<ExpertViews>(cfg, L.model().layout(), topo,
                                          L.model().params(Arena::EXPERTS));
    if (cfg.experts.signal == ExpertSignalKind::ADAPTERS)
      adapters = std::make_unique<ExpertAdapters>(cfg, topo);
    // the island runs my experts from the masters, the others from their views (+ adapters);
    // my experts' gradients go to my home, the views' to the adapters
    L.parallax()->set_sources(home.get(), views.get(), adapters.get());
    L.parallax()->set_grad_sink([&](int m, int e, const float* g1, const float* g3, const float* g2) {
      if (L.parallax()->homed_here(m, e)) home->add_expert_grad(m, e, g1, g3, g2);
      else if (adapters) adapters->add_weight_grad(m, e, g1, g3, g2);
    });
    L.model().release_expert_params();  // the homes and views hold the routed experts now
  }
  TokenLoader loader(*train_split, T);
  TokenLoader val_loader(*val_split, T);
  Progress pg;
  if (!resume_from.empty()) {
    load_learner_state(resume_from, wrank, cfg, L, outer.get(), pg);
    L.sync_to_device();
    if (outer) outer->restore(pg.step, pg.island_tokens);
    if (tier) {
      const bool rehome = rehoming(resume_from, cfg);  // another expert_workers: experts move home
      if (home && rehome) load_home_state_rehomed(resume_from, *home, mc);
      else if (home) load_home_state(resume_from, wrank, *home);
      load_view_state(resume_from, wrank, *views, rehome);
      if (adapters) load_adapter_state(resume_from, wrank, *adapters);
      if (rehome)
        log->info("re-homed the experts: topology.expert_workers {} -> {}",
                  checkpoint_config(resume_from).topology.expert_workers, tc.expert_workers);
    }
    loader.set_cursor(pg.data_cursor);
    log->info("resumed from {} (step {})", resume_from, pg.step);
  }
  std::unique_ptr<MetricsWriter> metrics;
  if (wrank == 0) {
    if (tier && !resume_from.empty() && rehoming(resume_from, cfg) &&
        fs::exists(run_dir + "/metrics.h5")) {
      // its [rows, world] datasets have the old world size: keep the file, start a new one
      const std::string aside = fmt::format("{}/metrics.before_step_{:08d}.h5", run_dir, pg.step);
      fs::rename(run_dir + "/metrics.h5", aside);
      log->info("metrics of the old topology moved to {}", aside);
    }
    metrics = std::make_unique<MetricsWriter>(run_dir);
    metrics->truncate_after_step(pg.step);
  }
  res.start_step = pg.step;
  const size_t nb = L.model().layout().backbone_size, ne = L.model().layout().experts_size;
  log->info("mode {} | {} islands x {} ranks, {} syncers | model {:.2f} M parameters ({} backbone, "
            "{} experts), {} MoE layers x {} experts",
            to_string(cfg.train.mode), I, R, topo.syncers, (nb + ne) / 1e6, nb, ne,
            mc.moe_layers(), mc.n_experts);
  log->info("data: {} train tokens in this rank's part, {} validation tokens; {} steps x {} "
            "tokens x {} ranks",
            train_split->size(), val_split->size(), cfg.train.steps, B * T, NL);

  std::vector<int32_t> in((size_t)B * T), tg((size_t)B * T);
  std::vector<int64_t> load((size_t)mc.moe_layers() * mc.n_experts, 0);
  auto t_int = clock::now();
  double loss_sum = 0, aux_sum = 0, gnorm = 0;
  int n_int = 0;
  int64_t tokens_int = 0;
  const int64_t steps = cfg.train.steps;
  const int64_t step_tokens = (int64_t)B * T * NL;

  auto do_eval = [&](int64_t step) {
    double vl = 0;
    for (int b = 0; b < cfg.data.eval_batches; ++b) {
      val_loader.eval_batch(b, B, T, in.data(), tg.data());
      vl += L.eval_batch(in.data(), tg.data());
    }
    vl /= cfg.data.eval_batches;
    learners.allreduce_sum(&vl, 1, Tier::CONTROL);
    vl /= NL;  // the mean over islands (ranks of an island agree)
    if (metrics) {
      metrics->append("/eval/step", step);
      metrics->append("/eval/loss", vl);
    }
    res.evals.emplace_back(step, vl);
    log->info("step {:>6} | eval loss {:.4f}", step, vl);
  };
  auto do_checkpoint = [&](int64_t step) {
    if (topo.syncers > 0) {
      learners.barrier();  // every learner has its replies: syncer state is at `step`
      if (topo.local_rank == 0 && topo.island == 0)
        for (int s = 0; s < topo.syncers; ++s) {
          MPI_Request rq = p2p.isend(&step, sizeof(step), topo.syncer_rank(s), TAG_CKPT, Tier::CONTROL);
          Comm::wait(rq);
        }
    }
    ParallelCheckpointWriter w;
    pg.data_cursor = loader.cursor();
    L.sync_to_host();
    add_learner_state(w, L, outer.get(), pg);
    if (home) add_home_state(w, *home, step);
    if (adapters) add_adapter_state(w, *adapters);
    if (views) add_view_state(w, *views);
    const std::string p = commit_checkpoint(world, w, ckpt_dir, cfg, step, tok.get(),
                                            cfg.checkpoint.keep);
    log->info("checkpoint {}", p);
  };
  if (pg.step == 0 && cfg.data.eval_every > 0) do_eval(0);

  while (pg.step < steps) {
    const double lr =
        lr_at((int)pg.step, (int)steps, (int)cfg.train.warmup_steps, cfg.train.lr, cfg.train.min_lr);
    loader.next_batch(B, T, in.data(), tg.data());
    if (ParallaxExperts* px = L.parallax())
      px->begin_step(pg.step + 1, cfg.experts.signal == ExpertSignalKind::SKETCHES &&
                                      (pg.step + 1) % cfg.experts.sketch_every == 0);
    StepStats st = L.step(in.data(), tg.data(), lr);
    if (adapters) adapters->step(st.counts, lr);
    ++pg.step;
    pg.tokens += step_tokens;
    pg.island_tokens += (int64_t)B * T * R;
    if (K > 1 && R > 1 && pg.step % K == 0) average_over(island, L.model());
    if (outer) outer->after_step(pg.step, pg.island_tokens);
    gnorm = st.grad_norm;
    if (!sync_mode && I > 1) {  // islands differ: report their mean
      double v[2] = {st.loss, st.aux};
      learners.allreduce_sum(v, 2, Tier::CONTROL);
      st.loss = v[0] / NL;
      st.aux = v[1] / NL;
      st.ce = st.loss - st.aux;
    }
    res.losses.push_back(st.loss);
    for (size_t i = 0; i < load.size(); ++i) load[i] += st.counts[i];
    loss_sum += st.ce;
    aux_sum += st.aux;
    tokens_int += step_tokens;
    ++n_int;
    int stop = g_preempted.load();
    if (NL > 1) {
      int any = 0;
      MPI_Allreduce(&stop, &any, 1, MPI_INT, MPI_MAX, comms.learners);
      stop = any;
    }
    const bool last = pg.step == steps || pg.step == opt.stop_after || stop;
    const bool ckpt_due = (cfg.checkpoint.every > 0 && pg.step % cfg.checkpoint.every == 0) || last;
    if (tier) {  // mode parallax: sketches to the homes, expert updates, snapshots back
      tier->send_sketches(pg.step,
                          (ckpt_due ? EXPERT_FLAG_CHECKPOINT : 0u) | (last ? EXPERT_FLAG_STOP : 0u),
                          L.parallax()->take_outbox());
      const bool det = cfg.train.deterministic;
      if (home) {
        if (det) tier->receive_sketches(pg.step, *home);
        else tier->drain_sketches(*home, pg.step);
        if (pg.step % cfg.experts.expert_update_every == 0)
          home->update(lr, (double)I * cfg.experts.expert_update_every);
      }
      if (adapters && pg.step % cfg.experts.adapter_every == 0) {  // deltas home, adapters reset
        tier->send_deltas(adapters->take_deltas(pg.step));
        if (home) {
          if (det) tier->receive_deltas(*home);
          else tier->drain_deltas(*home);  // what has arrived; the rest folds at a later one
          home->apply_deltas();
        }
      }
      const bool snap = pg.step % views->every() == 0;
      if (snap && home)
        tier->send_snapshot(home->view_message(pg.step), views->lowrank() ? Tier::SURROGATE : Tier::SNAPSHOT);
      if (det) {
        if (snap) tier->receive_snapshots(*views);
        tier->wait_sends();
      } else {
        tier->drain_snapshots(*views);
        tier->progress();
      }
    }

    if (pg.step % cfg.log.every == 0 || last) {
      const auto now = clock::now();
      const double dt = std::chrono::duration<double>(now - t_int).count();
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const double tps = tokens_int / std::max(dt, 1e-9);
      const double eta = elapsed / (double)(pg.step - res.start_step) * (double)(steps - pg.step);
      const double ce = loss_sum / n_int, aux = aux_sum / n_int;
      if (!sync_mode && I > 1) {  // island loads -> all islands
        learners.allreduce_sum(load.data(), (int64_t)load.size(), Tier::CONTROL);
        for (auto& x : load) x /= R;
      }
      auto comm = stats.gather_to_root(comms.learners);
      std::vector<int64_t> peak(NL, peak_rss_bytes());
      MPI_Gather(&peak[0], 1, MPI_INT64_T, peak.data(), 1, MPI_INT64_T, 0, comms.learners);
      log->info("step {:>6}/{} | loss {:.4f} | aux {:.4f} | lr {:.2e} | gnorm {:.3f} | "
                "{:.0f} tok/s | ETA {}",
                pg.step, steps, ce, aux, lr, gnorm, tps, fmt_duration(eta));
      if (metrics) {
        metrics->append("/train/step", pg.step);
        metrics->append("/train/loss", ce);
        metrics->append("/train/aux_loss", aux);
        metrics->append("/train/lr", lr);
        metrics->append("/train/tokens", pg.tokens);
        metrics->append("/train/time_s", elapsed);
        metrics->append("/train/tokens_per_s", tps);
        metrics->append("/train/grad_norm", gnorm);
        metrics->append_row("/experts/load", load,
                            {(hsize_t)mc.moe_layers(), (hsize_t)mc.n_experts});
        std::vector<int64_t> peak_w(wsize, -1);
        std::copy(peak.begin(), peak.end(), peak_w.begin());
        metrics->append_row("/memory/peak_bytes", peak_w, {(hsize_t)wsize});
        if (!last) {  // syncer columns are known at the end only: -1 until then
          for (auto& row : comm) row.resize(wsize, -1);
          append_comm_rows(*metrics, comm);
        }
        int64_t sent = 0;
        for (auto& row : comm)
          for (int r = 0; r < NL; ++r) sent += row[r];
        metrics->log_jsonl({{"step", (double)pg.step},
                            {"loss", ce},
                            {"aux_loss", aux},
                            {"lr", lr},
                            {"grad_norm", gnorm},
                            {"tokens", (double)pg.tokens},
                            {"tokens_per_s", tps},
                            {"time_s", elapsed},
                            {"bytes_sent_per_rank_per_token",
                             (double)sent / NL / std::max<int64_t>(1, pg.tokens)}});
      }
      std::fill(load.begin(), load.end(), 0);
      loss_sum = aux_sum = 0;
      n_int = 0;
      tokens_int = 0;
      t_int = now;
    }
    if (cfg.data.eval_every > 0 && (pg.step % cfg.data.eval_every == 0 || last)) do_eval(pg.step);
    if (ckpt_due) do_checkpoint(pg.step);
    if (metrics) metrics->flush();
    if (last) break;
  }
  if (tier && !cfg.train.deterministic) {  // take what is still in flight
    const int64_t se = views->every();
    const int64_t ae = cfg.experts.adapter_every;
    tier->finish_learner(home.get(), pg.step, pg.step - res.start_step,
                         pg.step / se - res.start_step / se,
                         adapters ? pg.step / ae - res.start_step / ae : 0, *views);
  }
  if (outer) outer->finish();
  if (home) log->info("expert home: {} experts, {} updates, sketches {}", home->owned().size(),
                      home->steps_taken(), home->tally().summary());
  res.end_step = pg.step;
  res.tokens = pg.tokens;
  res.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  auto comm = stats.gather_to_root(world);  // syncers join this one
  if (metrics) {
    append_comm_rows(*metrics, comm);
    metrics->flush();
    res.comm_bytes = comm;
    log->info("bytes sent per token, by tier: mean over learners | all syncers and workers");
    const double tok = (double)std::max<int64_t>(1, pg.tokens);
    for (int t = 0; t < kTierCount; ++t) {
      int64_t s = 0, o = 0;
      for (int r = 0; r < NL; ++r) s += comm[t][r];
      for (int r = NL; r < wsize; ++r) o += comm[t][r];
      if (s > 0 || o > 0)
        log->info("  {:<16} {:>12.2f} | {:>12.2f}", tier_name((Tier)t), (double)s / NL / tok, (double)o / tok);
    }
  }
  if (!res.evals.empty())
    log->info("done: {} steps in {} | validation loss {:.4f} (first {:.4f}) | metrics {}/metrics.h5 "
              "| checkpoints {}",
              pg.step - res.start_step, fmt_duration(res.seconds), res.evals.back().second,
              res.evals.front().second, run_dir, ckpt_dir);
  return res;
}

}  // namespace px
