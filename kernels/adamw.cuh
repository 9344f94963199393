#pragma once
// Fused AdamW on fp32 master weights, same contract as px::cpu::adamw_update (bias-corrected,
// decoupled weight decay, step 1-based). The gradient may be fp32 or bf16. Optionally writes
// a bf16 copy of the updated weights (the compute copy) in the same pass (p_bf16 != null).
#include "cuda_common.cuh"

namespace px::cuda {

template <class G>
void adamw_update(float* p, const G* g, float* m, float* v, size_t n, float lr, float beta1,
                  float beta2, float eps, float wd, int step, bf16* p_bf16 = nullptr,
                  cudaStream_t stream = 0);

}  // namespace px::cuda
