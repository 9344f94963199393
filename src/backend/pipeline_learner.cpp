// defines: PipelineLearner
#include "backend/pipeline_learner.hpp"

#include <algorithm>
#include <cmath>

#include "parallel/pipeline_schedule.hpp"  // defines: one_f_one_b, pipeline_slots
#include "parallel/pipeline_split.hpp"     // defines: PipelineSplit

namespace px {

namespace {
constexpr int kTagActivation = 1, kTagGradient = 2;  // (on the pipeline's own communicator)

}  // namespace

ModelMemory PipelineLearner::stage_memory(const Config& cfg, int stage) {
  ModelMemory mem = learner_model_memory(cfg);
  const LayerRange layers = PipelineSplit(cfg).layers(stage);
  mem.layer_begin = layers.begin;
  mem.layer_end = layers.end;
  mem.slots = pipeline_slots(stage, cfg.topology.pipeline_stages, cfg.train.micro_batches);
  return mem;
}

PipelineLearner::PipelineLearner(const Config& cfg, Comm& island, Comm& dp, int micro_batch,
                                 const Topology* topo)
    : dp_(dp), pipe_(Comm::dup(island.get(), island.stats())), stage_(island.rank()),
      stages_(island.size()), batch_(micro_batch), seq_(cfg.model.seq_len),
      micro_(cfg.train.micro_batches),
      slots_(pipeline_slots(stage_, stages_, micro_)), grad_clip_(cfg.train.grad_clip),
      model_(cfg.model, micro_batch, cfg.model.seq_len, stage_memory(cfg, stage_)) {
  model_.init_params((uint64_t)cfg.train.seed);
  const bool parallax = cfg.train.mode == TrainMode::PARALLAX;
  if (parallax) {
    if (!topo) throw std::logic_error("PipelineLearner: mode parallax needs the topology");
    parallax_ = std::make_unique<ParallaxExperts>(cfg, *topo, model_,
                                                  micro_batch * seq_ * cfg.model.top_k, slots_);
  }
  const ArenaSpan bb = model_.span(Arena::BACKBONE), ex = model_.span(Arena::EXPERTS);
  opt_ = std::make_unique<AdamW>(model_.layout(), adamw_config(cfg), 0, parallax ? 0 : -1,
                                 optimizer_windows(cfg.train.zero == 1),
                                 std::array<size_t, 2>{bb.lo, ex.lo});
  const size_t n = (size_t)batch_ * seq_ * cfg.model.d_model;
  boundary_bytes_ = (int)(n * sizeof(float));
  if (stage_ + 1 < stages_) recv_grad_.assign(n, 0.f);
  if (stage_ + 1 < stages_) send_act_.assign(kSendBuffers, std::vector<float>(n, 0.f));
  if (stage_ > 0) send_grad_.assign(kSendBuffers, std::vector<float>(n, 0.f));
  act_reqs_.assign(kSendBuffers, MPI_REQUEST_NULL);
  grad_reqs_.assign(kSendBuffers, MPI_REQUEST_NULL);
  if (dp.size() > 1) sum_stats_ = [this](double* v, int k) { dp_.allreduce_sum(v, k, Tier::CONTROL); };
  set_parallel(false);
}

std::array<ArenaWindow, 2> PipelineLearner::optimizer_windows(bool zero) {
  std::array<ArenaWindow, 2> w{};
  const int D = dp_.size(), r = dp_.rank();
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
    const ArenaSpan span = model_.span(a);
    w[(int)a] = {span.lo, span.hi};
    if (!zero || D == 1 || !model_.params(a)) continue;  // (parallax: no routed-expert arena)
    w[(int)a] = zero_shard(span.lo, span.size(), r, D, shards_[(int)a]);  // my 1/D of the span
  }
  return w;
}

void PipelineLearner::set_parallel(bool eval) {
  if (eval || dp_.size() == 1) model_.set_parallel(0, nullptr, parallax_.get());
  else model_.set_parallel((double)batch_ * seq_ * dp_.size(), &sum_stats_, parallax_.get());
}

void PipelineLearner::send(const float* data, int buf, int to, std::vector<MPI_Request>& reqs) {
  reqs[buf] = pipe_.isend(data, boundary_bytes_, to, to > stage_ ? kTagActivation : kTagGradient, Tier::ISLAND);
}

void PipelineLearner::wait_sends() {
  Comm::wait_all(act_reqs_, "pipeline activation sends");
  Comm::wait_all(grad_reqs_, "pipeline gradient sends");
}

void PipelineLearner::forward_micro(int micro, const int32_t* in, const int32_t* tg, Sums& sums) {
  const int slot = micro % slots_;
  const size_t per = (size_t)batch_ * seq_;
  if (stage_ > 0) pipe_.recv(model_.stage_input(slot), boundary_bytes_, stage_ - 1, kTagActivation);
  if (parallax_) parallax_->begin_micro_batch(micro, micro_);
  model_.forward_stage(in + micro * per, tg + micro * per, slot);
  if (stage_ + 1 < stages_) {  // (a ring of send buffers: the next stage takes them in order)
    const int buf = micro % kSendBuffers;
    Comm::wait(act_reqs_[buf], "pipeline send");  // (the buffer's earlier micro-batch)
    std::copy_n(model_.stage_output(slot), send_act_[buf].size(), send_act_[buf].data());
    send(send_act_[buf].data(), buf, stage_ + 1, act_reqs_);
  }
  else sums.ce += model_.last_ce();
  sums.aux += model_.last_aux();
  const std::vector<int64_t> c = model_.expert_counts();
  if (sums.counts.empty()) sums.counts.assign(c.size(), 0);
  for (size_t j = 0; j < c.size(); ++j) sums.counts[j] += c[j];
}

void PipelineLearner::backward_micro(int micro) {
  const int slot = micro % slots_;
  const bool last = stage_ + 1 == stages_;
  if (!last)
    pipe_.recv(recv_grad_.data(), boundary_bytes_, stage_ + 1, kTagGradient);
  model_.backward_stage(slot, last ? nullptr : recv_grad_.data());
  if (stage_ == 0) return;
  // (a ring of buffers: the previous stage takes its gradients in order, each at its own
  // backward of that micro-batch, which waits on nothing of this stage's later ones)
  const int buf = micro % kSendBuffers;
  Comm::wait(grad_reqs_[buf], "pipeline send");  // (the buffer's previous gradient)
  std::copy_n(model_.input_grad(), send_grad_[buf].size(), send_grad_[buf].data());
  send(send_grad_[buf].data(), buf, stage_ - 1, grad_reqs_);
}

StepStats PipelineLearner::combine(Sums& sums) {
  StepStats s;
  float* const grads[2] = {model_.grads(Arena::BACKBONE), model_.grads(Arena::EXPERTS)};
  // over the stage's data-parallel group: its gradients (all-reduced, or with ZeRO-1 my shard
  // reduce-scattered, then the shards' squared norms summed), the counts, the CE shares
  const bool zero = !shards_[0].empty() || !shards_[1].empty();
  double sq = 0;
  if (dp_.size() > 1) {
    for (Arena a : {Arena::BACKBONE, Arena::EXPERTS}) {
      float* g = grads[(int)a];
      if (!g) continue;
      if (shards_[(int)a].empty()) dp_.allreduce_sum(g, (int64_t)model_.arena_size(a), Tier::ISLAND);
      else dp_.reduce_scatter_sum(g, shards_[(int)a], Tier::ISLAND);
    }
    dp_.allreduce_sum(sums.counts.data(), (int64_t)sums.counts.size(), Tier::CONTROL);
  }
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS})
    if (grads[(int)a]) sq += opt_->sq_norm(grads[(int)a], a);
  double group[2] = {sums.ce, zero ? sq : 0.0};  // (shares of the group's mean CE)
  if (dp_.size() > 1) dp_.allreduce_sum(group, zero ? 2 : 1, Tier::CONTROL);
  if (zero) sq = group[1];
  // over the stages: the CE (the last stage's), the aux losses and squared gradient norms of
  // every stage's layers, the routing counts of every stage's MoE layers
  double spread[3] = {group[0], sums.aux / micro_, sq};
  pipe_.allreduce_sum(spread, 3, Tier::CONTROL);
  pipe_.allreduce_sum(sums.counts.data(), (int64_t)sums.counts.size(), Tier::CONTROL);
  s.ce = spread[0] / micro_;
  s.aux = spread[1];
  s.loss = s.ce + s.aux;
  s.grad_norm = std::sqrt(spread[2]);
  s.counts = std::move(sums.counts);
  return s;
}

StepStats PipelineLearner::step(const int32_t* in, const int32_t* tg, double lr) {
  model_.zero_grad();
  model_.set_loss_scale(1.0 / micro_);
  Sums sums;
  for (const PipelineOp& op : one_f_one_b(stage_, stages_, micro_)) {
    if (op.forward) forward_micro(op.micro, in, tg, sums);
    else backward_micro(op.micro);
  }
  wait_sends();
  StepStats s = combine(sums);
  // every stage has the same loss and norm: they skip together
  s.skipped = step_must_skip(s, lr, grad_clip_);
  if (s.skipped) return s;
  float* const params[2] = {model_.params(Arena::BACKBONE), model_.params(Arena::EXPERTS)};
  float* const grads[2] = {model_.grads(Arena::BACKBONE), model_.grads(Arena::EXPERTS)};
  opt_->step(params, grads, lr, s.grad_norm);
  for (Arena a : {Arena::BACKBONE, Arena::EXPERTS})  // ZeRO-1: every rank's updated shard to all
    if (!shards_[(int)a].empty()) dp_.allgather_blocks(params[(int)a], shards_[(int)a], Tier::ISLAND);
  model_.update_router_bias(s.counts);
  return s;
}

double PipelineLearner::eval_batch(const int32_t* in, const int32_t* tg) {
  // every rank of a stage evaluates the same batch: local statistics; the last stage's mean
  // CE over the micro-batches reaches every stage
  set_parallel(true);
  Sums sums;
  for (int i = 0; i < micro_; ++i) forward_micro(i, in, tg, sums);
  wait_sends();
  set_parallel(false);
  pipe_.allreduce_sum(&sums.ce, 1, Tier::CONTROL);
  return sums.ce / micro_;
}


}  // namespace px
