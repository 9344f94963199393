// ParamLayout: names, shapes, arenas and init scales of every parameter (DESIGN §2).
#include "model/param_layout.hpp"

#include <algorithm>
#include <cmath>

namespace px {

ParamLayout::ParamLayout(const ModelConfig& c) {
  const int d = c.d_model, V = c.vocab, E = c.n_experts, S = c.n_shared, h = c.expert_hidden,
            dh = c.dense_hidden;
  const bool glu = c.expert_act == ExpertActKind::SWIGLU;
  const double std0 = 0.02, std_out = 0.02 / std::sqrt(2.0 * c.n_layers);
  auto add = [&](const std::string& name, std::vector<int> shape, Arena a, bool decay,
                 double init) {
    size_t n = 1;
    for (int s : shape) n *= (size_t)s;
    size_t& top = a == Arena::BACKBONE ? backbone_size : experts_size;
    specs.push_back({name, std::move(shape), a, top, n, decay, init});
    top += n;
    return specs.back().offset;
  };
  const Arena BB = Arena::BACKBONE, EX = Arena::EXPERTS;
  first_moe_layer = c.dense_layers;
  embed = add("embed", {V, d}, BB, true, std0);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    LayerOffsets o{};
    o.attn_g = add(p + "attn_norm", {d}, BB, false, 0);
    o.wq = add(p + "attn.wq", {d, d}, BB, true, std0);
    o.wk = add(p + "attn.wk", {d, d}, BB, true, std0);
    o.wv = add(p + "attn.wv", {d, d}, BB, true, std0);
    o.wo = add(p + "attn.wo", {d, d}, BB, true, std_out);
    o.ffn_g = add(p + "ffn_norm", {d}, BB, false, 0);
    if (!c.is_moe(l)) {
      o.dense_w1 = add(p + "ffn.w1", {d, dh}, BB, true, std0);
      o.dense_w3 = add(p + "ffn.w3", {d, dh}, BB, true, std0);
      o.dense_w2 = add(p + "ffn.w2", {dh, d}, BB, true, std_out);
    } else {
      o.router = add(p + "moe.router", {d, E}, BB, true, std0);
      if (S > 0) {
        o.shared_w1 = add(p + "moe.shared.w1", {S, d, h}, BB, true, std0);
        if (glu) o.shared_w3 = add(p + "moe.shared.w3", {S, d, h}, BB, true, std0);
        o.shared_w2 = add(p + "moe.shared.w2", {S, h, d}, BB, true, std_out);
      }
      o.expert_w1 = add(p + "moe.experts.w1", {E, d, h}, EX, true, std0);
      if (glu) o.expert_w3 = add(p + "moe.experts.w3", {E, d, h}, EX, true, std0);
      o.expert_w2 = add(p + "moe.experts.w2", {E, h, d}, EX, true, std_out);
    }
    layers.push_back(o);
  }
  final_g = add("final_norm", {d}, BB, false, 0);
  head = add("head", {d, V}, BB, true, std0);
}

ArenaSpan ParamLayout::layers_span(Arena a, int lb, int le) const {
  const int L = (int)layers.size();
  if (a == Arena::BACKBONE)  // layers in order between the embedding and the final norm
    return {lb == 0 ? 0 : layers[lb].attn_g, le == L ? backbone_size : layers[le].attn_g};
  // the experts arena: [moe_layer][expert] blocks in layer order; w1 opens each layer's block
  auto first_at_or_after = [&](int l) {
    l = std::max(l, first_moe_layer);
    return l < L ? layers[l].expert_w1 : experts_size;
  };
  return {first_at_or_after(lb), first_at_or_after(le)};
}

}  // namespace px
