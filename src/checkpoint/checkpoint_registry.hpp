#pragma once
// The checkpoint of one rank: the list of its Stateful components. save() is collective over
// the run's world (every rank of every role joins one parallel HDF5 write); rank 0 adds the
// tokenizer and the resolved config, so `parallax sample` needs only the file. load() hands
// each component the checkpoint in the order they were added.
#include <mpi.h>

#include <string>
#include <vector>

#include "checkpoint/stateful.hpp"   // defines: Stateful, StateReader
#include "data/bpe_tokenizer.hpp"    // defines: BpeTokenizer

namespace px {

class CheckpointRegistry {
 public:
  void add(Stateful* s) { parts_.push_back(s); }
  // Writes DIR/step_XXXXXXXX.h5 (collective over world; tok: rank 0's tokenizer or null),
  // prunes to the newest `keep`; returns the path.
  std::string save(MPI_Comm world, const std::string& dir, const Config& cfg, int64_t step,
                   const BpeTokenizer* tok) const;
  void load(const StateReader& r) const;

 private:
  std::vector<Stateful*> parts_;
};

}  // namespace px
