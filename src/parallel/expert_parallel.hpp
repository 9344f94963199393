#pragma once
// Expert parallelism (mode "sync", DESIGN §4): the routed experts of every MoE layer are split
// in contiguous blocks over the P learner ranks (rank p holds experts
// [p*E/P, (p+1)*E/P)). Forward: each rank's permuted rows go to the experts' holder with an
// all-to-all, the holder runs its experts grouped over every source's rows, and the outputs
// come back with the reverse all-to-all. Backward mirrors it; expert weight gradients stay
// with the holder (summed over every source's tokens). Counted as tier expert_parallel.
#include <cstdint>
#include <vector>

#include "model/layers.hpp"     // defines: RoutedExperts
#include "model/moe_model.hpp"  // defines: MoeModel
#include "parallel/comm.hpp"    // defines: Comm

namespace px {

class ExpertParallel final : public RoutedExperts<float> {
 public:
  // comm: the ranks that share experts (all learners). max_local_rows: N*k of one rank.
  ExpertParallel(Comm& comm, MoeModel<float>& model, int max_local_rows);
  // The heap of its row buffers (for `parallax plan`): dropless, sized for every rank's rows
  // reaching this rank's experts.
  static double buffer_bytes(const ModelConfig& cfg, int max_local_rows, int ranks);

  static int first_expert(int rank, int ranks, int n_experts) { return (int)((int64_t)rank * n_experts / ranks); }
  int expert_begin() const { return expert_begin_; }
  int expert_end() const { return expert_end_; }

  void forward(int moe_layer, const float* xp, const int32_t* bounds, float* yp) override;
  void backward(int moe_layer, const float* dyp, float* dxp) override;

 private:
  // Row routing of one layer's last forward (kept for its backward).
  struct Plan {
    std::vector<int> send_rows, send_off, recv_rows, recv_off;  // per rank, in rows
    std::vector<int32_t> local_bounds;                            // [E_local + 1]
    std::vector<int32_t> recv_to_grouped;                         // received row -> grouped row
    int recv_total = 0;
  };
  void exchange_rows(const float* send, const std::vector<int>& s_rows, const std::vector<int>& s_off,
                     float* recv, const std::vector<int>& r_rows, const std::vector<int>& r_off);
  size_t weight_offset(int moe_layer, int which) const;  // element offset of expert expert_begin_'s W1/W3/W2

  Comm& comm_;
  MoeModel<float>& model_;
  int ranks_, rank_, n_experts_, expert_begin_, expert_end_, d_model_, hidden_;
  size_t max_rows_;
  std::vector<Plan> plans_;
  // per layer: grouped inputs (x), x W1, x W3 and activations of the local experts, [max_rows, d|h]
  std::vector<std::vector<float>> grouped_x_, grouped_xw1_, grouped_xw3_, grouped_act_;
  std::vector<float> recv_buf_, grouped_buf_, grouped_buf2_, scratch1_, scratch2_, scratch3_;
};

}  // namespace px
