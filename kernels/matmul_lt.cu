// defines: matmul_lt (cuBLASLt dense GEMM with a per-key algorithm cache)
#include "matmul_lt.cuh"

#include <map>
#include <mutex>
#include <tuple>

namespace px::cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;

struct LtKey {
  int dev, M, K, N, tA, tB, acc, ab, c;
  auto tie() const { return std::tie(dev, M, K, N, tA, tB, acc, ab, c); }
  bool operator<(const LtKey& o) const { return tie() < o.tie(); }
};

struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct LtState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

std::mutex g_mu;
std::map<int, LtState> g_state;   // per device
std::map<LtKey, LtPlan> g_cache;  // per key

cudaDataType_t to_cuda(DType t) { return t == DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF; }

LtState& state_for(int dev) {
  LtState& s = g_state[dev];
  if (!s.handle) {
    cublasCheck(cublasLtCreate(&s.handle));
    cudaCheck(cudaMalloc(&s.workspace, kWorkspaceBytes));
  }
  return s;
}

}  // namespace

void matmul_lt(void* C, DType c_type, const void* A, const void* B, DType ab_type, int M, int K,
               int N, bool transA, bool transB, bool accumulate, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  int dev = 0;
  cudaCheck(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(g_mu);
  LtState& st = state_for(dev);
  if (K <= 0) {  // empty product: C = accumulate ? C : 0
    if (!accumulate)
      cudaCheck(cudaMemsetAsync(C, 0, (size_t)M * N * (c_type == DTYPE_F32 ? 4 : 2), stream));
    return;
  }
  LtKey key{dev, M, K, N, transA, transB, accumulate, ab_type, c_type};
  auto it = g_cache.find(key);
  if (it == g_cache.end()) {
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: pass B as the
    // first Lt operand and A as the second, with m = N, n = M.
    LtPlan p;
    cublasCheck(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opB = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opA = transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opB, sizeof opB));
    cublasCheck(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opA, sizeof opA));
    cudaDataType_t ab = to_cuda(ab_type), ct = to_cuda(c_type);
    // First operand (B): col-major [N,K] if !transB (row-major [K,N]), else [K,N].
    if (!transB) cublasCheck(cublasLtMatrixLayoutCreate(&p.a, ab, N, K, N));
    else cublasCheck(cublasLtMatrixLayoutCreate(&p.a, ab, K, N, K));
    // Second operand (A): col-major [K,M] if !transA (row-major [M,K]), else [M,K].
    if (!transA) cublasCheck(cublasLtMatrixLayoutCreate(&p.b, ab, K, M, K));
    else cublasCheck(cublasLtMatrixLayoutCreate(&p.b, ab, M, K, M));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.c, ct, N, M, N));
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = kWorkspaceBytes;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(st.handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &res,
                                               &found));
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    if (found == 0) cuda_fail("cublasLtMatmulAlgoGetHeuristic", "no algorithm", __FILE__, __LINE__);
    p.algo = res.algo;
    it = g_cache.emplace(key, p).first;
  }
  const LtPlan& p = it->second;
  float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  cublasCheck(cublasLtMatmul(st.handle, p.op, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c,
                             &p.algo, st.workspace, kWorkspaceBytes, stream));
}

void matmul(float* C, const float* A, const float* B, int M, int K, int N, bool transA,
            bool transB, bool accumulate, cudaStream_t stream) {
  matmul_lt(C, DTYPE_F32, A, B, DTYPE_F32, M, K, N, transA, transB, accumulate, stream);
}
void matmul(float* C, const bf16* A, const bf16* B, int M, int K, int N, bool transA,
            bool transB, bool accumulate, cudaStream_t stream) {
  matmul_lt(C, DTYPE_F32, A, B, DTYPE_BF16, M, K, N, transA, transB, accumulate, stream);
}
void matmul(bf16* C, const bf16* A, const bf16* B, int M, int K, int N, bool transA,
            bool transB, bool accumulate, cudaStream_t stream) {
  matmul_lt(C, DTYPE_BF16, A, B, DTYPE_BF16, M, K, N, transA, transB, accumulate, stream);
}

size_t matmul_lt_cache_size() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_cache.size();
}

void matmul_lt_free() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& [k, p] : g_cache) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  g_cache.clear();
  for (auto& [d, s] : g_state) {
    cudaFree(s.workspace);
    cublasLtDestroy(s.handle);
  }
  g_state.clear();
}

}  // namespace px::cuda
