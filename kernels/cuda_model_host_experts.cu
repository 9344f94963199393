// CudaModel with its routed experts run by a host executor (set_routed_experts): each MoE
// layer's permuted rows staged to the host and back, bf16 on the device, fp32 on the host.
#include <vector>

#include "cuda_common.cuh"
#include "cuda_model.cuh"
#include "model/layers.hpp"  // defines: RoutedExperts
#include "wire/bf16.hpp"     // defines: bf16_encode_rne_n, bf16_decode_n

namespace px::cuda {

void CudaModel::host_experts_forward(int l, LayerBufs& b) {
  const int E = cfg_.n_experts;
  const size_t rows = (size_t)tokens_ * cfg_.top_k, n = rows * cfg_.d_model;
  host_bf_.reserve_discard(n);
  host_bounds_.reserve_discard(E + 1);
  cudaCheck(cudaMemcpyAsync(host_bf_.data(), xp_, n * sizeof(bf16), cudaMemcpyDeviceToHost,
                            stream_));
  cudaCheck(cudaMemcpyAsync(host_bounds_.data(), b.bounds, (E + 1) * sizeof(int32_t),
                            cudaMemcpyDeviceToHost, stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  host_in_.resize(n);
  bf16_decode_n(host_bf_.data(), n, host_in_.data());
  host_out_.assign(n, 0.f);
  const int moe_layer = l - cfg_.dense_layers;
  host_experts_->use_slot(0, true);
  host_experts_->forward(moe_layer, host_in_.data(), host_bounds_.data(), host_out_.data());
  bf16_encode_rne_n(host_out_.data(), n, host_bf_.data());
  cudaCheck(cudaMemcpyAsync(b.yp, host_bf_.data(), n * sizeof(bf16), cudaMemcpyHostToDevice,
                            stream_));
  cudaCheck(cudaStreamSynchronize(stream_));  // (host_bf_ is reused by the next layer)
}

void CudaModel::host_experts_backward(int l) {
  const size_t n = (size_t)tokens_ * cfg_.top_k * cfg_.d_model;
  host_bf_.reserve_discard(n);
  cudaCheck(cudaMemcpyAsync(host_bf_.data(), dyp_, n * sizeof(bf16), cudaMemcpyDeviceToHost,
                            stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
  host_in_.resize(n);
  bf16_decode_n(host_bf_.data(), n, host_in_.data());
  host_out_.assign(n, 0.f);
  host_experts_->use_slot(0, false);
  host_experts_->backward(l - cfg_.dense_layers, host_in_.data(), host_out_.data());
  bf16_encode_rne_n(host_out_.data(), n, host_bf_.data());
  cudaCheck(cudaMemcpyAsync(dxp_, host_bf_.data(), n * sizeof(bf16), cudaMemcpyHostToDevice,
                            stream_));
  cudaCheck(cudaStreamSynchronize(stream_));
}

}  // namespace px::cuda
