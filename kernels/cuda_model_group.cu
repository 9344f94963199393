// CudaModel as one rank of a data-parallel group: the group's routing statistics, the split
// step (clip_gradients, apply_update) around the gradient sum, and arena-sized copies.
#include <cmath>
#include <vector>

#include "cuda_common.cuh"
#include "cuda_model.cuh"
#include "elementwise.cuh"  // defines: sum_squares_partial, grad_clip_finish

namespace px::cuda {

void CudaModel::set_group(double global_tokens,
                          const std::function<void(double*, int)>* sum_stats) {
  group_tokens_ = global_tokens;
  sum_stats_ = sum_stats;
}

void CudaModel::group_router_stats(LayerBufs& b) {
  const int E = cfg_.n_experts, N = tokens_;
  // (members: sized once, not allocated per MoE layer and step)
  std::vector<int32_t>& counts = gstat_counts_;
  std::vector<float>& mean = gstat_mean_;
  std::vector<double>& st = gstat_sums_;
  counts.resize(E);
  mean.resize(E);
  st.resize(2 * (size_t)E);
  cudaCheck(cudaMemcpyAsync(counts.data(), b.counts, E * sizeof(int32_t),
                            cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaMemcpyAsync(mean.data(), b.prob_mean, E * sizeof(float), cudaMemcpyDeviceToHost,
                            stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  for (int e = 0; e < E; ++e) {
    st[e] = counts[e];
    st[E + e] = (double)mean[e] * N;  // this rank's sum of probabilities
  }
  (*sum_stats_)(st.data(), 2 * E);
  for (int e = 0; e < E; ++e) {
    counts[e] = (int32_t)std::llround(st[e]);
    mean[e] = (float)(st[E + e] / group_tokens_);
  }
  // (pageable sources: the copies are staged before cudaMemcpyAsync returns)
  cudaCheck(cudaMemcpyAsync(gcounts_, counts.data(), E * sizeof(int32_t), cudaMemcpyHostToDevice,
                            stream_));
  cudaCheck(cudaMemcpyAsync(b.prob_mean, mean.data(), E * sizeof(float), cudaMemcpyHostToDevice,
                            stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
}

double CudaModel::grad_norm() {
  cudaCheck(cudaStreamSynchronize(stream_));  // the staging buffer is free
  hyper_host_[4] = 0.f;                       // (no clipping factor: the caller's)
  cudaCheck(cudaMemcpyAsync(hyper_ + 4, hyper_host_ + 4, sizeof(float), cudaMemcpyHostToDevice,
                            stream_));
  launch_grad_norm();
  return last_grad_norm();
}

void CudaModel::stage_step_scalars(float lr, float wd) {
  ++step_;
  hyper_host_[0] = lr;
  hyper_host_[1] = (float)(1.0 / (1.0 - std::pow((double)beta1, step_)));
  hyper_host_[2] = (float)(1.0 / (1.0 - std::pow((double)beta2, step_)));
  hyper_host_[3] = wd;
}

void CudaModel::apply_update(float lr, float wd, float grad_scale) {
  cudaCheck(cudaStreamSynchronize(stream_));
  stage_step_scalars(lr, wd);
  hyper_host_[5] = grad_scale;
  cudaCheck(cudaMemcpyAsync(hyper_, hyper_host_, 6 * sizeof(float), cudaMemcpyHostToDevice,
                            stream_));
  launch_adamw(hyper_ + 5);
  cudaCheck(cudaStreamSynchronize(stream_));
}

void CudaModel::download_arena(int a, float* dst, bool grads) const {
  float* d[2] = {nullptr, nullptr};
  d[a] = dst;
  download_arenas(d[0], d[1], grads ? g_ : p_);
}

void CudaModel::upload_arena(int a, const float* src, float* dst) const {
  cudaCheck(cudaStreamSynchronize(stream_));
  for (size_t i = 0; i < layout_.specs.size(); ++i) {
    const ParamSpec& s = layout_.specs[i];
    if ((int)s.arena != a || no_storage(s)) continue;
    cudaCheck(cudaMemcpyAsync(dst + doff_[i], src + s.offset, s.size * sizeof(float),
                              cudaMemcpyHostToDevice, stream_));
  }
}

void CudaModel::upload_arena_grads(int a, const float* src) {
  upload_arena(a, src, g_[a]);
  cudaCheck(cudaStreamSynchronize(stream_));
}

void CudaModel::upload_arena_params(int a, const float* src) {
  upload_arena(a, src, p_[a]);
  convert_f32_to_bf16(w_[a], p_[a], dsize_[a], stream_);
  cudaCheck(cudaStreamSynchronize(stream_));
}

}  // namespace px::cuda
