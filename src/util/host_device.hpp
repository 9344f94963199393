#pragma once
// PX_HD marks small inline functions that both the CPU code and the CUDA kernels call, so that
// the two backends share one definition (and agree bit for bit where a format depends on it).
#ifdef __CUDACC__
#define PX_HD __host__ __device__
#else
#define PX_HD
#endif
