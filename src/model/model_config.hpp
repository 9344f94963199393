#pragma once
// The model's hyper-parameters ([model] section of the TOML config, DESIGN §2/§8).
#include <cstdint>
#include <string>

namespace px {

enum class ExpertActKind { SWIGLU, RELU2 };
enum class BalanceKind { AUX, BIAS };

struct ModelConfig {
  int d_model = 64;
  int n_layers = 2;
  int n_heads = 4;
  int vocab = 512;
  int seq_len = 64;
  int dense_layers = 1;    // the first dense_layers layers use a dense SwiGLU FFN
  int n_experts = 8;       // routed experts per MoE layer (E)
  int top_k = 2;
  int n_shared = 1;        // shared experts per MoE layer, always on
  int expert_hidden = 64;  // hidden width of every expert (shared and routed)
  int dense_hidden = 128;  // hidden width of the dense SwiGLU layers
  ExpertActKind expert_act = ExpertActKind::SWIGLU;
  double aux_alpha = 0.01;  // Switch aux-loss coefficient (balance = aux)
  BalanceKind balance = BalanceKind::AUX;
  double bias_gamma = 1e-3;  // aux-loss-free bias step (balance = bias)

  int head_dim() const { return d_model / n_heads; }
  int moe_layers() const { return n_layers - dense_layers; }
  bool is_moe(int layer) const { return layer >= dense_layers; }
};

}  // namespace px
