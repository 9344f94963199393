#pragma once
// The validation loss of the model a run produces (issue: "evaluate what was trained"): the
// global backbone of the last outer sync plus every routed expert's master from its home, read
// from a checkpoint, beside island 0's own model (its backbone since that sync, the masters).
// An island's eval during training uses its views of remote experts instead; this is the
// model `parallax sample` and a user would keep. `parallax eval` prints it; the sweep table
// uses it for the gap to sync.
#include <cstdint>
#include <string>

namespace px {

struct AssembledEval {
  int64_t step = 0;
  bool global_backbone = false;  // the checkpoint had one (modes diloco, parallax)
  double loss = 0;               // global backbone (else rank 0's) + masters
  double loss_island0 = 0;       // island 0's backbone + masters (NaN when not asked for)
  int batches = 0;
};

// path: a checkpoint file, or a run folder (its newest checkpoint). data_dir: the validation
// data ("" = the checkpoint config's data.dir); batches: 0 = its data.eval_batches. The batches
// are the ones the training evaluations use (TokenLoader::eval_batch); island0: also island 0's
// backbone + masters (a second pass). Throws UserError naming the path when there is no
// checkpoint or no data.
AssembledEval evaluate_checkpoint(const std::string& path, const std::string& data_dir, int batches,
                                  bool island0 = true);

}  // namespace px
