#pragma once
// An expert home's update arithmetic on host arrays (ExpertHome on the CPU and the staged home
// device run exactly these, so the two agree bit for bit): the pieces of ExpertHome::update.
#include <cstddef>

namespace px {

bool any_nonzero(const float* g, size_t n);
// g *= inv, element by element; returns the sum of the scaled squares (double, in order).
double scale_and_sum_squares(float* g, size_t n, float inv);
void scale_values(float* g, size_t n, float s);
// One AdamW step (optim/adamw.hpp's betas and eps) of n master weights in tensors of wsz
// elements (cpu::adamw_update per tensor, as optim/adamw.cpp), weight decay wd, 1-based step.
void home_adamw(float* masters, const float* g, float* m, float* v, size_t n, size_t wsz,
                float lr, float wd, int step);
// One SGD step of n master weights: masters -= lr * (g + wd * masters).
void home_sgd(float* masters, const float* g, size_t n, float lr, float wd);

}  // namespace px
