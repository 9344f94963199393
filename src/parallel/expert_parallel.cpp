// Expert-parallel dispatch/combine of routed-expert rows with MPI all-to-alls.
#include "parallel/expert_parallel.hpp"

#include <cstring>

#include "ops/cpu/cpu_ops.hpp"  // defines: expert_ffn_forward, expert_ffn_backward

namespace px {

double ExpertParallel::buffer_bytes(const ModelConfig& cfg, int max_local_rows, int ranks) {
  const double rows = (double)max_local_rows * ranks, d = cfg.d_model, h = cfg.expert_hidden;
  const bool glu = cfg.expert_act == ExpertActKind::SWIGLU;
  return 4.0 * rows * (cfg.moe_layers() * (d + (glu ? 3 : 2) * h) + 3 * d + 3 * h);
}

ExpertParallel::ExpertParallel(Comm& comm, MoeModel<float>& model, int max_local_rows)
    : comm_(comm), model_(model), ranks_(comm.size()), rank_(comm.rank()) {
  const ModelConfig& cfg = model.config();
  n_experts_ = cfg.n_experts;
  d_model_ = cfg.d_model;
  hidden_ = cfg.expert_hidden;
  expert_begin_ = first_expert(rank_, ranks_, n_experts_);
  expert_end_ = first_expert(rank_ + 1, ranks_, n_experts_);
  max_rows_ = (size_t)max_local_rows * ranks_;  // dropless worst case: every row to my experts
  const int moe_layers = cfg.moe_layers();
  const bool glu = cfg.expert_act == ExpertActKind::SWIGLU;
  plans_.resize(moe_layers);
  grouped_x_.resize(moe_layers);
  grouped_xw1_.resize(moe_layers);
  grouped_xw3_.resize(moe_layers);
  grouped_act_.resize(moe_layers);
  for (int l = 0; l < moe_layers; ++l) {
    grouped_x_[l].resize(max_rows_ * d_model_);
    grouped_xw1_[l].resize(max_rows_ * hidden_);
    if (glu) grouped_xw3_[l].resize(max_rows_ * hidden_);
    grouped_act_[l].resize(max_rows_ * hidden_);
  }
  recv_buf_.resize(max_rows_ * d_model_);
  grouped_buf_.resize(max_rows_ * d_model_);
  grouped_buf2_.resize(max_rows_ * d_model_);
  scratch1_.resize(max_rows_ * hidden_);
  scratch2_.resize(max_rows_ * hidden_);
  scratch3_.resize(max_rows_ * hidden_);
}

size_t ExpertParallel::weight_offset(int moe_layer, int which) const {
  const LayerOffsets& offsets = model_.layout().layers[model_.config().dense_layers + moe_layer];
  const size_t base = which == 0 ? offsets.expert_w1 : which == 1 ? offsets.expert_w3 : offsets.expert_w2;
  return base + (size_t)expert_begin_ * d_model_ * hidden_;
}

void ExpertParallel::exchange_rows(const float* send, const std::vector<int>& s_rows,
                                   const std::vector<int>& s_off, float* recv,
                                   const std::vector<int>& r_rows, const std::vector<int>& r_off) {
  std::vector<int> send_bytes(ranks_), send_displs(ranks_), recv_bytes(ranks_), recv_displs(ranks_);
  const int row = d_model_ * (int)sizeof(float);
  for (int p = 0; p < ranks_; ++p) {
    send_bytes[p] = s_rows[p] * row;
    send_displs[p] = s_off[p] * row;
    recv_bytes[p] = r_rows[p] * row;
    recv_displs[p] = r_off[p] * row;
  }
  comm_.alltoallv(send, send_bytes, send_displs, recv, recv_bytes, recv_displs, Tier::EXPERT_PARALLEL);
}

void ExpertParallel::forward(int l, const float* xp, const int32_t* bounds, float* yp) {
  Plan& plan = plans_[l];
  const int local_experts = expert_end_ - expert_begin_;
  // 1. how many rows of each of its experts every rank receives from me
  std::vector<int32_t> cnt_send(n_experts_), cnt_recv((size_t)ranks_ * local_experts);
  for (int e = 0; e < n_experts_; ++e) cnt_send[e] = bounds[e + 1] - bounds[e];
  std::vector<int> send_bytes(ranks_), send_displs(ranks_), recv_bytes(ranks_), recv_displs(ranks_);
  for (int p = 0; p < ranks_; ++p) {
    const int first = first_expert(p, ranks_, n_experts_), end = first_expert(p + 1, ranks_, n_experts_);
    send_bytes[p] = (end - first) * 4;
    send_displs[p] = first * 4;
    recv_bytes[p] = local_experts * 4;
    recv_displs[p] = p * local_experts * 4;
  }
  comm_.alltoallv(cnt_send.data(), send_bytes, send_displs, cnt_recv.data(), recv_bytes, recv_displs, Tier::EXPERT_PARALLEL);
  // 2. the row plan: my rows for rank p are the contiguous segment of p's experts
  plan.send_rows.assign(ranks_, 0);
  plan.send_off.assign(ranks_, 0);
  plan.recv_rows.assign(ranks_, 0);
  plan.recv_off.assign(ranks_, 0);
  for (int p = 0; p < ranks_; ++p) {
    const int first = first_expert(p, ranks_, n_experts_), end = first_expert(p + 1, ranks_, n_experts_);
    plan.send_off[p] = bounds[first];
    plan.send_rows[p] = bounds[end] - bounds[first];
    for (int j = 0; j < local_experts; ++j) plan.recv_rows[p] += cnt_recv[(size_t)p * local_experts + j];
    plan.recv_off[p] = p == 0 ? 0 : plan.recv_off[p - 1] + plan.recv_rows[p - 1];
  }
  plan.recv_total = plan.recv_off[ranks_ - 1] + plan.recv_rows[ranks_ - 1];
  plan.local_bounds.assign(local_experts + 1, 0);
  for (int j = 0; j < local_experts; ++j) {
    int n = 0;
    for (int p = 0; p < ranks_; ++p) n += cnt_recv[(size_t)p * local_experts + j];
    plan.local_bounds[j + 1] = plan.local_bounds[j] + n;
  }
  plan.recv_to_grouped.resize(plan.recv_total);
  {
    std::vector<int32_t> fill(plan.local_bounds.begin(), plan.local_bounds.end() - 1);
    for (int p = 0; p < ranks_; ++p) {
      int r = plan.recv_off[p];
      for (int j = 0; j < local_experts; ++j)
        for (int i = 0; i < cnt_recv[(size_t)p * local_experts + j]; ++i) plan.recv_to_grouped[r++] = fill[j]++;
    }
  }
  // 3. dispatch, group by expert, run my experts
  exchange_rows(xp, plan.send_rows, plan.send_off, recv_buf_.data(), plan.recv_rows, plan.recv_off);
  float* grouped_x = grouped_x_[l].data();
  for (int r = 0; r < plan.recv_total; ++r)
    std::memcpy(grouped_x + (size_t)plan.recv_to_grouped[r] * d_model_, recv_buf_.data() + (size_t)r * d_model_,
                sizeof(float) * d_model_);
  const float* weights = model_.params(Arena::EXPERTS);
  const bool glu = model_.config().expert_act == ExpertActKind::SWIGLU;
  const auto kind = glu ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2;
  float* grouped_y = grouped_buf_.data();
  cpu::expert_ffn_forward(grouped_y, grouped_xw1_[l].data(), glu ? grouped_xw3_[l].data() : nullptr, grouped_act_[l].data(), grouped_x,
                          weights + weight_offset(l, 0), glu ? weights + weight_offset(l, 1) : nullptr, weights + weight_offset(l, 2),
                          plan.local_bounds.data(), local_experts, d_model_, hidden_, kind);
  // 4. back to the sources, in their row order
  for (int r = 0; r < plan.recv_total; ++r)
    std::memcpy(recv_buf_.data() + (size_t)r * d_model_, grouped_y + (size_t)plan.recv_to_grouped[r] * d_model_,
                sizeof(float) * d_model_);
  exchange_rows(recv_buf_.data(), plan.recv_rows, plan.recv_off, yp, plan.send_rows, plan.send_off);
}

void ExpertParallel::backward(int l, const float* dyp, float* dxp) {
  const Plan& plan = plans_[l];
  const int local_experts = expert_end_ - expert_begin_;
  exchange_rows(dyp, plan.send_rows, plan.send_off, recv_buf_.data(), plan.recv_rows, plan.recv_off);
  float* grouped_dy = grouped_buf_.data();
  for (int r = 0; r < plan.recv_total; ++r)
    std::memcpy(grouped_dy + (size_t)plan.recv_to_grouped[r] * d_model_, recv_buf_.data() + (size_t)r * d_model_,
                sizeof(float) * d_model_);
  const float* weights = model_.params(Arena::EXPERTS);
  float* grads = model_.grads(Arena::EXPERTS);
  const bool glu = model_.config().expert_act == ExpertActKind::SWIGLU;
  const auto kind = glu ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2;
  float* grouped_dx = grouped_buf2_.data();
  cpu::expert_ffn_backward(grouped_dx, grads + weight_offset(l, 0), glu ? grads + weight_offset(l, 1) : nullptr, grads + weight_offset(l, 2),
                           grouped_dy, grouped_x_[l].data(), grouped_xw1_[l].data(), glu ? grouped_xw3_[l].data() : nullptr,
                           grouped_act_[l].data(), weights + weight_offset(l, 0), glu ? weights + weight_offset(l, 1) : nullptr,
                           weights + weight_offset(l, 2), plan.local_bounds.data(), local_experts, d_model_, hidden_, kind, scratch1_.data(),
                           scratch2_.data(), scratch3_.data());
  for (int r = 0; r < plan.recv_total; ++r)
    std::memcpy(recv_buf_.data() + (size_t)r * d_model_, grouped_dx + (size_t)plan.recv_to_grouped[r] * d_model_,
                sizeof(float) * d_model_);
  exchange_rows(recv_buf_.data(), plan.recv_rows, plan.recv_off, dxp, plan.send_rows, plan.send_off);
}

}  // namespace px
