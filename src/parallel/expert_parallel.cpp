// Expert-parallel dispatch/combine of routed-expert rows with MPI all-to-alls.
#include "parallel/expert_parallel.hpp"

#include <cstring>

#include "ops/cpu/cpu_ops.hpp"  // defines: expert_ffn_forward, expert_ffn_backward

namespace px {

ExpertParallel::ExpertParallel(Comm& comm, MoeModel<float>& model, int max_local_rows)
    : comm_(comm), model_(model), P_(comm.size()), me_(comm.rank()) {
  const ModelConfig& c = model.config();
  E_ = c.n_experts;
  d_ = c.d_model;
  h_ = c.expert_hidden;
  e0_ = first_expert(me_, P_, E_);
  e1_ = first_expert(me_ + 1, P_, E_);
  max_rows_ = (size_t)max_local_rows * P_;  // dropless worst case: every row to my experts
  const int L = c.moe_layers();
  const bool glu = c.expert_act == ExpertActKind::SWIGLU;
  plans_.resize(L);
  xl_.resize(L);
  a_.resize(L);
  b_.resize(L);
  act_.resize(L);
  for (int l = 0; l < L; ++l) {
    xl_[l].resize(max_rows_ * d_);
    a_[l].resize(max_rows_ * h_);
    if (glu) b_[l].resize(max_rows_ * h_);
    act_[l].resize(max_rows_ * h_);
  }
  recv_buf_.resize(max_rows_ * d_);
  grouped_buf_.resize(max_rows_ * d_);
  grouped_buf2_.resize(max_rows_ * d_);
  s1_.resize(max_rows_ * h_);
  s2_.resize(max_rows_ * h_);
  s3_.resize(max_rows_ * h_);
}

size_t ExpertParallel::w_off(int moe_layer, int which) const {
  const LayerOffsets& o = model_.layout().layers[model_.config().dense_layers + moe_layer];
  const size_t base = which == 0 ? o.expert_w1 : which == 1 ? o.expert_w3 : o.expert_w2;
  return base + (size_t)e0_ * d_ * h_;
}

void ExpertParallel::exchange_rows(const float* send, const std::vector<int>& s_rows,
                                   const std::vector<int>& s_off, float* recv,
                                   const std::vector<int>& r_rows, const std::vector<int>& r_off) {
  std::vector<int> sb(P_), sd(P_), rb(P_), rd(P_);
  const int row = d_ * (int)sizeof(float);
  for (int p = 0; p < P_; ++p) {
    sb[p] = s_rows[p] * row;
    sd[p] = s_off[p] * row;
    rb[p] = r_rows[p] * row;
    rd[p] = r_off[p] * row;
  }
  comm_.alltoallv(send, sb, sd, recv, rb, rd, Tier::EXPERT_PARALLEL);
}

void ExpertParallel::forward(int l, const float* xp, const int32_t* bounds, float* yp) {
  Plan& pl = plans_[l];
  const int El = e1_ - e0_;
  // 1. how many rows of each of its experts every rank receives from me
  std::vector<int32_t> cnt_send(E_), cnt_recv((size_t)P_ * El);
  for (int e = 0; e < E_; ++e) cnt_send[e] = bounds[e + 1] - bounds[e];
  std::vector<int> sb(P_), sd(P_), rb(P_), rd(P_);
  for (int p = 0; p < P_; ++p) {
    const int a = first_expert(p, P_, E_), b = first_expert(p + 1, P_, E_);
    sb[p] = (b - a) * 4;
    sd[p] = a * 4;
    rb[p] = El * 4;
    rd[p] = p * El * 4;
  }
  comm_.alltoallv(cnt_send.data(), sb, sd, cnt_recv.data(), rb, rd, Tier::EXPERT_PARALLEL);
  // 2. the row plan: my rows for rank p are the contiguous segment of p's experts
  pl.send_rows.assign(P_, 0);
  pl.send_off.assign(P_, 0);
  pl.recv_rows.assign(P_, 0);
  pl.recv_off.assign(P_, 0);
  for (int p = 0; p < P_; ++p) {
    const int a = first_expert(p, P_, E_), b = first_expert(p + 1, P_, E_);
    pl.send_off[p] = bounds[a];
    pl.send_rows[p] = bounds[b] - bounds[a];
    for (int j = 0; j < El; ++j) pl.recv_rows[p] += cnt_recv[(size_t)p * El + j];
    pl.recv_off[p] = p == 0 ? 0 : pl.recv_off[p - 1] + pl.recv_rows[p - 1];
  }
  pl.recv_total = pl.recv_off[P_ - 1] + pl.recv_rows[P_ - 1];
  pl.local_bounds.assign(El + 1, 0);
  for (int j = 0; j < El; ++j) {
    int n = 0;
    for (int p = 0; p < P_; ++p) n += cnt_recv[(size_t)p * El + j];
    pl.local_bounds[j + 1] = pl.local_bounds[j] + n;
  }
  pl.recv_to_grouped.resize(pl.recv_total);
  {
    std::vector<int32_t> fill(pl.local_bounds.begin(), pl.local_bounds.end() - 1);
    for (int p = 0; p < P_; ++p) {
      int r = pl.recv_off[p];
      for (int j = 0; j < El; ++j)
        for (int i = 0; i < cnt_recv[(size_t)p * El + j]; ++i) pl.recv_to_grouped[r++] = fill[j]++;
    }
  }
  // 3. dispatch, group by expert, run my experts
  exchange_rows(xp, pl.send_rows, pl.send_off, recv_buf_.data(), pl.recv_rows, pl.recv_off);
  float* xl = xl_[l].data();
  for (int r = 0; r < pl.recv_total; ++r)
    std::memcpy(xl + (size_t)pl.recv_to_grouped[r] * d_, recv_buf_.data() + (size_t)r * d_,
                sizeof(float) * d_);
  const float* W = model_.params(Arena::EXPERTS);
  const bool glu = model_.config().expert_act == ExpertActKind::SWIGLU;
  const auto kind = glu ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2;
  float* yl = grouped_buf_.data();
  cpu::expert_ffn_forward(yl, a_[l].data(), glu ? b_[l].data() : nullptr, act_[l].data(), xl,
                          W + w_off(l, 0), glu ? W + w_off(l, 1) : nullptr, W + w_off(l, 2),
                          pl.local_bounds.data(), El, d_, h_, kind);
  // 4. back to the sources, in their row order
  for (int r = 0; r < pl.recv_total; ++r)
    std::memcpy(recv_buf_.data() + (size_t)r * d_, yl + (size_t)pl.recv_to_grouped[r] * d_,
                sizeof(float) * d_);
  exchange_rows(recv_buf_.data(), pl.recv_rows, pl.recv_off, yp, pl.send_rows, pl.send_off);
}

void ExpertParallel::backward(int l, const float* dyp, float* dxp) {
  const Plan& pl = plans_[l];
  const int El = e1_ - e0_;
  exchange_rows(dyp, pl.send_rows, pl.send_off, recv_buf_.data(), pl.recv_rows, pl.recv_off);
  float* dyl = grouped_buf_.data();
  for (int r = 0; r < pl.recv_total; ++r)
    std::memcpy(dyl + (size_t)pl.recv_to_grouped[r] * d_, recv_buf_.data() + (size_t)r * d_,
                sizeof(float) * d_);
  const float* W = model_.params(Arena::EXPERTS);
  float* G = model_.grads(Arena::EXPERTS);
  const bool glu = model_.config().expert_act == ExpertActKind::SWIGLU;
  const auto kind = glu ? cpu::EXPERT_ACT_SWIGLU : cpu::EXPERT_ACT_RELU2;
  float* dxl = grouped_buf2_.data();
  cpu::expert_ffn_backward(dxl, G + w_off(l, 0), glu ? G + w_off(l, 1) : nullptr, G + w_off(l, 2),
                           dyl, xl_[l].data(), a_[l].data(), glu ? b_[l].data() : nullptr,
                           act_[l].data(), W + w_off(l, 0), glu ? W + w_off(l, 1) : nullptr,
                           W + w_off(l, 2), pl.local_bounds.data(), El, d_, h_, kind, s1_.data(),
                           s2_.data(), s3_.data());
  for (int r = 0; r < pl.recv_total; ++r)
    std::memcpy(recv_buf_.data() + (size_t)r * d_, dxl + (size_t)pl.recv_to_grouped[r] * d_,
                sizeof(float) * d_);
  exchange_rows(recv_buf_.data(), pl.recv_rows, pl.recv_off, dxp, pl.send_rows, pl.send_off);
}

}  // namespace px
