#pragma once
// CudaModel: the MoE language model of px::MoeModel<float> (DESIGN §2) trained on one GPU —
// forward, backward and AdamW — from the kernels in kernels/. Same ModelConfig, same
// ParamLayout and the same two fp32 parameter arenas (backbone, experts), so parameters copy
// one-to-one from/to a CPU model.
//
// Precision (DESIGN §9): fp32 master weights, gradients and optimizer moments; a bf16 copy of
// every weight (refreshed by the optimizer pass) feeds the GEMMs. The residual stream, RMSNorm
// statistics, router (fp32 GEMM, so top-k selection sees fp32 scores), aux loss,
// cross-entropy and all reductions are fp32; q, k, v (RoPE in fp32 math on bf16 storage),
// the attention output and dq/dk/dv are bf16 (tensor-core flash attention, fp32 accumulate
// and softmax statistics, kernels/attention_bf16); the attention projections, head, dense FFN, shared and routed experts are bf16 x bf16 -> fp32-accumulate
// GEMMs (cuBLASLt; the grouped expert kernel for the routed experts; the dense FFN and each
// shared expert are cuBLASLt GEMMs on an interleaved [W1 | W3] copy plus elementwise
// SwiGLU / relu2 kernels). Activations that only feed GEMMs are stored bf16.
//
// A step runs on the model's stream without host synchronisation (the expert segment bounds
// stay on the device) until the loss is read at its end. Limits: balance = "aux" only (no
// router bias), one batch shape [batch, seq], head_dim 32, 64 or 128, d_model,
// expert_hidden and dense_hidden multiples of 8, n_experts <= 1024.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cuda_common.cuh"         // defines: bf16, cudaCheck
#include "pinned_buffer.cuh"       // defines: PinnedBuffer
#include "model/model_config.hpp"  // defines: ModelConfig
#include "model/param_layout.hpp"  // defines: ParamLayout, Arena

namespace px {
template <class T>
struct RoutedExperts;  // model/layers.hpp
}  // namespace px

namespace px::cuda {

class CudaModel {
 public:
  // Where the routed experts' weights live: in this model's expert arena, or with a host
  // executor (set_routed_experts, which must then be set before the first forward): no
  // expert arena on the device at all (parameters, bf16 copy, gradients, moments).
  enum class Experts { ON_DEVICE, ON_HOST };
  // Allocates everything once (parameters, optimizer state, activations, scratch) for
  // inputs of shape [batch, seq]; activations are poisoned (NaN) at allocation.
  CudaModel(const ModelConfig& cfg, int batch, int seq, Experts experts = Experts::ON_DEVICE)
      : CudaModel(cfg, batch, seq, experts, true) {}
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  // Device bytes the constructor would allocate (for choosing a batch that fits).
  static size_t device_bytes(const ModelConfig& cfg, int batch, int seq,
                             Experts experts = Experts::ON_DEVICE);

  // Host arenas in ParamLayout order (sizes layout().backbone_size / experts_size).
  // Upload also refreshes the bf16 copies and resets the optimizer (moments, step count).
  // A null arena is skipped (left as it is), in these and in the optimizer's copies.
  void upload_params(const float* backbone, const float* experts);
  void download_params(float* backbone, float* experts) const;
  // Gradients of the last backward (before clipping and the optimizer).
  void download_grads(float* backbone, float* experts) const;
  // AdamW moments in ParamLayout order, and the step count (checkpoints: exact resume).
  // upload_optimizer must follow upload_params (which resets the moments).
  void download_optimizer(float* m_backbone, float* m_experts, float* v_backbone,
                          float* v_experts) const;
  void upload_optimizer(const float* m_backbone, const float* m_experts, const float* v_backbone,
                        const float* v_experts, int steps_taken);

  // Mean cross-entropy + aux loss on inputs/targets [batch * seq] (host int32), no backward.
  double forward_loss(const int32_t* host_inputs, const int32_t* host_targets);
  // Zeroes the gradients, runs forward and backward; returns CE + aux.
  double forward_backward(const int32_t* host_inputs, const int32_t* host_targets);
  // forward_backward, then global-norm clipping (grad_clip <= 0: none) and one AdamW step
  // (betas 0.9/0.95, eps 1e-8, weight decay wd on ParamSpec::decay tensors only). Returns
  // the loss of the forward pass (before the update).
  double step(const int32_t* host_inputs, const int32_t* host_targets, float lr, float grad_clip,
              float wd);

  // ---- one rank of a data-parallel group (backend/device_learner: one GPU per rank) ----
  // The group's token count and the sum over its ranks of each MoE layer's routing statistics
  // (2E doubles: per-expert assignment counts, then per-expert sums of router probabilities,
  // px::moe_forward's convention), called between the router and the aux loss of every MoE
  // layer of a training forward (one stream synchronisation per MoE layer). With a group,
  // last_ce() is this rank's share of the group's mean CE, the aux loss is the group's and
  // the gradients are this rank's contributions to the group mean's gradient: their sum over
  // the ranks is it. global_tokens 0 or sum_stats null: this rank alone. Evaluation
  // (forward_loss) is always local. Not with set_use_graph (the hook runs on the host).
  void set_group(double global_tokens, const std::function<void(double*, int)>* sum_stats);
  // After forward_backward (and the group's gradient sum): the norm of this model's gradients
  // (both arenas; synchronises). The caller adds what else the global norm holds (experts
  // run on the host) and picks the clipping factor.
  double grad_norm();
  // One AdamW step (weight decay wd) with the gradients scaled by grad_scale (the clipping
  // factor); refreshes the bf16 weight copies. Synchronises.
  void apply_update(float lr, float wd, float grad_scale);
  // Arena a (0 backbone, 1 experts; not with Experts::ON_HOST) in host (ParamLayout) order: parameters or gradients
  // down, gradients up (a group's sum staged through the host), parameters up (refreshes
  // the bf16 copy; moments and step count untouched, unlike upload_params).
  void download_arena(int a, float* dst, bool grads) const;
  void upload_arena_grads(int a, const float* src);
  void upload_arena_params(int a, const float* src);
  // Arena a's gradients on the device in the device layout (device_arena_size(a) floats,
  // padding zero): what a device-side all-reduce (NCCL) sums in place.
  float* device_grads(int a) { return g_[a]; }
  size_t device_arena_size(int a) const { return dsize_[a]; }

  // Routed experts run by a host executor (mode parallax's ParallaxExperts: masters and
  // views; sync's ExpertParallel): each MoE layer's permuted rows go to the host (bf16 ->
  // fp32) and the executor's outputs come back (fp32 -> bf16), in the backward their input
  // gradients; the executor keeps the expert weights and gradients, so this model's expert
  // arena is neither read nor stepped. null (the default): the experts run here.
  void set_routed_experts(RoutedExperts<float>* ex) { host_experts_ = ex; }

  double last_ce() const { return last_ce_; }
  double last_aux() const { return last_aux_; }
  // Global gradient norm of the last step() (synchronises; for tests and logs).
  double last_grad_norm() const;
  int steps_taken() const { return step_; }
  const ParamLayout& layout() const { return layout_; }
  const ModelConfig& config() const { return cfg_; }
  size_t bytes() const { return bytes_; }
  cudaStream_t stream() const { return stream_; }

  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;

  // step() through a CUDA graph: the first step() after enabling runs eagerly (cuBLASLt
  // plans, kernel attributes), the second captures forward + backward + optimizer once, every
  // later one replays it (tokens and the step's scalars are copied in before the launch).
  // Pays off when the step is launch-bound (small models); profiling is off inside graphs.
  void set_use_graph(bool on) { use_graph_ = on; }

  // Tokens routed to each expert by the last forward: [moe_layers * E] (synchronises).
  std::vector<int64_t> expert_counts() const;

  // Per-phase device time (cudaEvents between the phases of a step; adds ~2 us per phase
  // boundary, so only for breakdowns): accumulated ms per phase since reset_profile().
  void set_profiling(bool on) { profiling_ = on; }
  void reset_profile() { std::fill(prof_ms_, prof_ms_ + PROF_COUNT, 0.0); }
  std::vector<std::pair<std::string, double>> profile_ms() const;

 private:
  struct LayerBufs {
    float* x = nullptr;      // [N, d] layer input (residual stream)
    bf16* xn = nullptr;      // [N, d] RMSNorm(x), attention GEMM operand
    float* rstd1 = nullptr;  // [N]
    bf16 *q = nullptr, *k = nullptr, *v = nullptr;  // [N, d] (q, k after RoPE)
    bf16* y_bf = nullptr;    // [N, d] attention output (Wo operand)
    float* lse = nullptr;    // [B, H, T]
    float* h = nullptr;      // [N, d] x + attention
    bf16* xn2 = nullptr;     // [N, d] RMSNorm(h)
    float* xn2_f = nullptr;  // [N, d] fp32 copy (router input; MoE layers)
    float* rstd2 = nullptr;  // [N]
    // dense FFN / shared experts: fa = [a | b] = xn2 [W1 | W3] [N, 2f] per FFN (relu2: a
    // [N, f]), fact = act(a, b) [N, f]; f = dh (dense) or h (shared, S of them)
    bf16 *fa = nullptr, *fact = nullptr;
    // MoE layers
    float *logits = nullptr, *probs = nullptr;  // [N, E]
    float* gates = nullptr;                     // [N, k]
    int32_t *idx = nullptr, *pos = nullptr, *row_token = nullptr;  // [N*k]
    int32_t* bounds = nullptr;                  // [E + 1]
    int32_t* counts = nullptr;                  // [E]
    float *prob_mean = nullptr, *aux_coef = nullptr;  // [E]
    bf16 *ea = nullptr, *eb = nullptr, *eact = nullptr;  // [N*k, h]
    bf16* yp = nullptr;                         // [N*k, d] routed expert outputs
  };
  CudaModel(const ModelConfig& cfg, int batch, int seq, Experts experts, bool allocate);
  // Experts::ON_HOST: spec i (of the expert arena) has no device storage
  bool no_storage(const ParamSpec& s) const { return (int)s.arena == 1 && !device_experts_; }
  template <class P>
  void plan(P& p);
  // nullptr for an arena: that arena is skipped
  void download_arenas(float* backbone, float* experts, const float* const* src) const;
  void upload_arena(int a, const float* src, float* dst) const;
  // the group hook of set_group on layer b's statistics: gcounts_ and b.prob_mean become
  // the group's counts and mean router probabilities
  void group_router_stats(LayerBufs& b);
  // set_routed_experts: MoE layer l's rows through the host executor (b.yp from xp_), and
  // the backward's input gradients (dxp_ from dyp_)
  void host_experts_forward(int l, LayerBufs& b);
  void host_experts_backward(int l);
  void launch_grad_norm();    // loss_[2] = norm, loss_[3] = clip factor (clip: hyper_[4])
  void launch_adamw(const float* gscale);
  // ++step_ and the AdamW scalars {lr, 1/(1-beta1^t), 1/(1-beta2^t), wd} into hyper_host_[0..3]
  void stage_step_scalars(float lr, float wd);  // the AdamW kernels (scalars: hyper_[0..3])
  void upload_tokens(const int32_t* inputs, const int32_t* targets);
  void forward(bool need_grad);
  void backward();
  void optimizer_step();
  // Dense FFN / one shared expert on cuBLASLt (hidden f, weights W1, W3 [d, f], W2 [f, d]):
  // ab = xn2 [W1 | W3] (one GEMM on the interleaved copy wcat_), act = silu(a) b (relu2:
  // ab = xn2 W1, act = relu(a)^2). The W2 GEMM is the caller's (its output type differs).
  void ffn_up(bf16* ab, bf16* act, const bf16* x, const bf16* w1, const bf16* w3, int f,
              bool glu);
  // Backward of ffn_up + W2 given dy (bf16 [N, d]): dx (fp32 [N, d], += when dx_acc) and the
  // fp32 weight gradients (+=).
  void ffn_down_backward(float* dx, bool dx_acc, float* gw1, float* gw3, float* gw2,
                         const bf16* dy, const bf16* x, const bf16* ab, const bf16* act,
                         const bf16* w1, const bf16* w3, const bf16* w2, int f, bool glu);
  double read_loss();
  enum Phase : int {
    PROF_EMBED, PROF_NORM, PROF_ATTN_GEMM, PROF_ATTENTION, PROF_DENSE_FFN, PROF_ROUTING,
    PROF_EXPERTS, PROF_HEAD, PROF_ELEMENTWISE, PROF_OPTIM, PROF_COUNT, PROF_END = PROF_COUNT
  };
  void mark(int phase);
  void train_body();  // forward + backward + optimizer (the captured part of a step)
  bool profiling_ = false, use_graph_ = false, capturing_ = false;
  int graph_eager_steps_ = 0;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t graph_exec_ = nullptr;
  float* hyper_ = nullptr;       // device [8]: lr, c1, c2, wd, clip
  float* hyper_host_ = nullptr;  // pinned [8]
  std::vector<cudaEvent_t> events_;
  std::vector<int> marks_;
  double prof_ms_[PROF_COUNT] = {};

  ModelConfig cfg_;
  ParamLayout layout_;
  int batch_, seq_, tokens_;
  cudaStream_t stream_ = nullptr;
  char* base_ = nullptr;
  size_t bytes_ = 0;
  size_t act_begin_ = 0, act_end_ = 0;  // byte range of activations + scratch (poisoned)
  float* loss_host_ = nullptr;      // pinned [4]
  int32_t* tok_host_ = nullptr;     // pinned [2 N] staging for inputs, targets

  // parameters and optimizer state (arena index: 0 backbone, 1 experts)
  float* p_[2] = {nullptr, nullptr};
  bf16* w_[2] = {nullptr, nullptr};
  float* g_[2] = {nullptr, nullptr};
  float* m_[2] = {nullptr, nullptr};
  float* v_[2] = {nullptr, nullptr};
  struct Range {
    int arena;
    size_t offset, size;
    bool decay;
  };
  std::vector<Range> ranges_;  // device offsets; neighbouring specs with the same decay merged
  // Device parameter layout: the ParamLayout with every tensor starting on a 256-byte
  // boundary (offsets rounded up to 128 elements; cuBLASLt's heuristics assume aligned
  // operands). Identical to the host layout when d_model is a multiple of 128.
  std::vector<size_t> doff_;         // per spec: device offset in its arena
  size_t dsize_[2] = {0, 0};         // device arena sizes (elements)
  std::vector<LayerOffsets> dev_layers_;  // per layer, device offsets
  size_t d_embed_ = 0, d_final_g_ = 0, d_head_ = 0;
  int step_ = 0;

  // activations
  std::vector<LayerBufs> layer_bufs_;
  int32_t *tok_ = nullptr, *tgt_ = nullptr;  // [N]
  float* resid_out_ = nullptr;               // [N, d]
  bf16* xf_ = nullptr;                       // [N, d]
  float* rstdf_ = nullptr;                   // [N]
  float* logits_ = nullptr;                  // [N, V] (dlogits in place)
  bf16* dlog_bf_ = nullptr;                  // [N, V]
  float* losses_ = nullptr;                  // [N]
  float* loss_ = nullptr;                    // [4]: ce, aux, grad norm, clip scale
  float* partials_ = nullptr;                // [2 * kSumSqBlocks]
  void* perm_scratch_ = nullptr;
  void* norm_scratch_ = nullptr;             // rmsnorm backward dg partials
  // backward / shared scratch
  float *dres_[2] = {nullptr, nullptr}, *dmid_ = nullptr, *dffn_ = nullptr;  // [N, d]
  bf16 *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr, *dy_bf_ = nullptr;   // [N, d]
  bf16 *dcur_bf_ = nullptr, *tmp_bf_ = nullptr;                              // [N, d]
  float* attn_scratch_ = nullptr;                                            // [B*H*T]
  bf16 *xp_ = nullptr, *dyp_ = nullptr, *dxp_ = nullptr;                     // [N*k, d]
  bf16 *dA_ = nullptr, *dB_ = nullptr;  // [max(N*k*h, N*dh, N*h)]
  // dense FFN / shared experts (f = max(dh, h) over the FFNs present)
  bf16* wcat_ = nullptr;    // [d, 2f] = [W1 | W3] rows (bf16 GEMM operand)
  float* dwcat_ = nullptr;  // [d, 2f] d[W1 | W3] of one FFN, added into W1 / W3's gradients
  bf16* dab_ = nullptr;     // [N, 2f] = [da | db]
  float* dgates_ = nullptr;             // [N*k]
  float* dlogits_r_ = nullptr;          // [N, E]
  double last_ce_ = 0, last_aux_ = 0;
  // set_group
  double group_tokens_ = 0;
  const std::function<void(double*, int)>* sum_stats_ = nullptr;
  int32_t* gcounts_ = nullptr;  // [E] the group's counts of the current MoE layer
  std::vector<int32_t> gstat_counts_;  // [E] host staging of group_router_stats
  std::vector<float> gstat_mean_;      // [E]
  std::vector<double> gstat_sums_;     // [2E] counts and probability sums, summed over the group
  // set_routed_experts
  bool device_experts_ = true;  // Experts::ON_DEVICE
  RoutedExperts<float>* host_experts_ = nullptr;
  PinnedBuffer<uint16_t> host_bf_;         // [N*k, d] bf16 bits, page-locked (DMA)
  std::vector<float> host_in_, host_out_;  // [N*k, d]
  PinnedBuffer<int32_t> host_bounds_;      // [E + 1]
};

// ---- kernels used by CudaModel (kernels/cuda_model_ops.cu) ---------------------------------

// Switch aux loss of one MoE layer from router_stats: f_e = counts[e] / (N k), P_e =
// prob_mean[e]; loss_acc[0] += alpha E sum_e f_e P_e; aux_coef[e] = alpha E f_e / N
// (d aux / d probs[n, e], as px::moe_forward).
void moe_aux_loss(float* aux_coef, float* loss_acc, const int32_t* counts,
                  const float* prob_mean, int N, int E, int k, float alpha,
                  cudaStream_t stream = 0);
// out[0] = scale * sum x[0..n) (one block, fixed order).
void sum_into(float* out, const float* x, int n, float scale, cudaStream_t stream = 0);
// px::cuda::adamw_update with the gradient scaled by *gscale (device: the clipping factor)
// on the fly (the gradient buffer is left untouched) and the step's scalars read on the
// device, hyper = {lr, c1 = 1/(1-beta1^step), c2 = 1/(1-beta2^step), weight decay} (decay
// false: no weight decay), so that a captured CUDA graph replays with new values. Also writes
// the bf16 weight copy.
void adamw_update_scaled(float* p, const float* g, float* m, float* v, size_t n,
                         const float* hyper, bool decay, float beta1, float beta2, float eps,
                         const float* gscale, bf16* p_bf16, cudaStream_t stream = 0);

}  // namespace px::cuda
