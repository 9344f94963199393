// defines: CheckpointRegistry, StateReader
#include "checkpoint/checkpoint_registry.hpp"

#include "parallel/wait_deadline.hpp"  // defines: WaitScope

#include "checkpoint/resume.hpp"    // defines: checkpoint_config, rehoming
#include "io/checkpoint_file.hpp"   // defines: checkpoint_path, prune_checkpoints

namespace px {

namespace {
// "format" attribute of the files; version 2 since the parallel HDF5 layout (unchanged by the
// Stateful components: they keep the dataset names of that version).
constexpr const char* kCheckpointFormat = "parallax-checkpoint-2";

void add_tokenizer(ParallelCheckpointWriter& w, const BpeTokenizer& tok) {
  std::vector<int32_t> merges;
  for (auto [l, r] : tok.merges()) merges.push_back(l), merges.push_back(r);
  w.add("tokenizer/merges", as_span(merges));
  const std::vector<int64_t> count = {(int64_t)tok.merges().size()};
  w.add("tokenizer/count", as_span(count));
}
}  // namespace

StateReader::StateReader(std::string path, int rank, const Config& cfg)
    : path_(std::move(path)), rank_(rank), saved_(checkpoint_config(path_)),
      rehoming_(px::rehoming(path_, cfg)) {}

bool StateReader::has(const std::string& name) const { return has_rank_array(path_, rank_, name); }

std::string CheckpointRegistry::save(MPI_Comm world, const std::string& dir, const Config& cfg,
                                     int64_t step, const BpeTokenizer* tok) const {
  int rank = 0;
  MPI_Comm_rank(world, &rank);
  ParallelCheckpointWriter w;
  for (Stateful* s : parts_) s->save(w);
  if (rank == 0 && tok) add_tokenizer(w, *tok);
  const std::string path = checkpoint_path(dir, step);
  w.commit(world, path, {{"config", config_to_toml(cfg)}, {"format", kCheckpointFormat}}, step);
  if (rank == 0) prune_checkpoints(dir, cfg.checkpoint.keep);
  const WaitScope ws("MPI_Barrier (after a checkpoint)", "world", 0);
  MPI_Barrier(world);
  return path;
}

void CheckpointRegistry::load(const StateReader& r) const {
  for (Stateful* s : parts_) s->load(r);
}

}  // namespace px
