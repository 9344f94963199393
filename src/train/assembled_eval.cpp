// defines: evaluate_checkpoint
#include "train/assembled_eval.hpp"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "checkpoint/resume.hpp"   // defines: checkpoint_config, load_model_params
#include "data/token_shards.hpp"   // defines: TokenSplit, TokenLoader
#include "io/checkpoint_file.hpp"  // defines: newest_checkpoint
#include "model/moe_model.hpp"     // defines: MoeModel
#include "util/errors.hpp"         // defines: UserError

namespace px {

namespace fs = std::filesystem;

namespace {

// a checkpoint file as it is; a run folder: its newest complete checkpoint
std::string checkpoint_of(const std::string& path) {
  if (!fs::is_directory(path)) return path;
  const auto newest = newest_checkpoint((fs::path(path) / "checkpoints").string());
  if (!newest) throw UserError(fmt::format("{}: no complete checkpoints/step_*.h5 in this run folder", path));
  return *newest;
}

double mean_loss(MoeModel<float>& model, const TokenLoader& loader, int batches, int B, int T) {
  std::vector<int32_t> in((size_t)B * T), tg(in.size());
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    loader.eval_batch(b, B, T, in.data(), tg.data());
    model.forward(in.data(), tg.data());
    sum += model.last_ce();
  }
  return sum / batches;
}

int64_t step_of(const std::string& ckpt) {
  const std::string name = fs::path(ckpt).stem().string();  // step_00000042
  try {
    return std::stoll(name.substr(5));
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

AssembledEval evaluate_checkpoint(const std::string& path, const std::string& data_dir, int batches,
                                  bool island0) {
  const std::string ckpt = checkpoint_of(path);
  if (!fs::exists(ckpt)) throw UserError(fmt::format("{}: no such checkpoint", ckpt));
  const Config cfg = checkpoint_config(ckpt);
  const int B = cfg.train.batch_size, T = cfg.model.seq_len;
  AssembledEval r;
  r.step = step_of(ckpt);
  r.batches = batches > 0 ? batches : cfg.data.eval_batches;
  const TokenSplit val(data_dir.empty() ? cfg.data.dir : data_dir, "val");
  const TokenLoader loader(val, T);
  MoeModel<float> model(cfg.model, B, T);
  r.global_backbone = has_global_backbone(ckpt);
  load_model_params(ckpt, model, true);
  r.loss = mean_loss(model, loader, r.batches, B, T);
  if (!island0) {
    r.loss_island0 = std::nan("");
  } else if (r.global_backbone) {
    load_model_params(ckpt, model, false);
    r.loss_island0 = mean_loss(model, loader, r.batches, B, T);
  } else {
    r.loss_island0 = r.loss;
  }
  return r;
}

}  // namespace px
