// CudaModel: optimizer state to and from the host (checkpoints).
#include "cuda_common.cuh"
#include "cuda_model.cuh"

namespace px::cuda {

void CudaModel::download_optimizer(float* mb, float* me, float* vb, float* ve) const {
  download_arenas(mb, me, m_);
  download_arenas(vb, ve, v_);
}

void CudaModel::upload_optimizer(const float* mb, const float* me, const float* vb,
                                 const float* ve, int steps_taken) {
  const float* src[2][2] = {{mb, me}, {vb, ve}};
  float* const* dst[2] = {m_, v_};
  cudaCheck(cudaStreamSynchronize(stream_));
  for (int which = 0; which < 2; ++which)
    for (size_t i = 0; i < layout_.specs.size(); ++i) {
      const ParamSpec& s = layout_.specs[i];
      const int a = (int)s.arena;
      if (!src[which][a] || no_storage(s)) continue;
      cudaCheck(cudaMemcpyAsync(dst[which][a] + doff_[i], src[which][a] + s.offset,
                                s.size * sizeof(float), cudaMemcpyHostToDevice, stream_));
    }
  step_ = steps_taken;
  cudaCheck(cudaStreamSynchronize(stream_));
}

}  // namespace px::cuda
