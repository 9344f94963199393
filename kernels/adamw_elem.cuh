#pragma once
// One AdamW element update (decoupled weight decay, bias corrections c1 = 1/(1-b1^t),
// c2 = 1/(1-b2^t)), shared by the standalone fused AdamW and the model's device-side step.
namespace px::cuda {

// Updates the moments m, v in place and returns the new parameter.
__device__ __forceinline__ float adamw_elem(float p, float g, float& m, float& v, float lr,
                                            float b1, float b2, float eps, float wd, float c1,
                                            float c2) {
  const float mi = b1 * m + (1.f - b1) * g;
  const float vi = b2 * v + (1.f - b2) * g * g;
  m = mi;
  v = vi;
  const float upd = (mi * c1) / (sqrtf(vi * c2) + eps);
  return p - lr * (upd + wd * p);
}

}  // namespace px::cuda
