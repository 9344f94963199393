#pragma once
// Stateful checkpointing (DESIGN §8; in the spirit of torchtitan's Stateful): every component
// that has state across steps (the learner model and its progress, the backbone tier's outer
// state, an expert home, views, adapters, a syncer's shards) saves and loads it itself, under
// its own dataset names in this rank's group of the checkpoint file. The checkpoint code
// (CheckpointRegistry) only holds a list of them.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "config/config.hpp"            // defines: Config
#include "io/checkpoint_parallel.hpp"   // defines: ParallelCheckpointWriter, read_rank_array

namespace px {

// One checkpoint file as seen from one rank: its arrays (and, for re-homing, other ranks'),
// the config it was written with, and whether this resume re-homes the experts.
class StateReader {
 public:
  StateReader(std::string path, int rank, const Config& cfg);

  const std::string& path() const { return path_; }
  int rank() const { return rank_; }
  const Config& saved_config() const { return saved_; }
  // Resuming mode parallax with another topology.expert_workers (experts move home).
  bool rehoming() const { return rehoming_; }

  template <class T>
  std::vector<T> read(const std::string& name, size_t count) const {
    return read_rank_array<T>(path_, rank_, name, count);
  }
  template <class T>
  std::vector<T> read_of(int rank, const std::string& name, size_t count) const {
    return read_rank_array<T>(path_, rank, name, count);
  }
  // Reads `name` of this rank into dst (in place: others may point into it).
  template <class T>
  void read_into(const std::string& name, std::span<T> dst) const {
    const auto v = read<T>(name, dst.size());
    std::copy(v.begin(), v.end(), dst.begin());
  }
  bool has(const std::string& name) const;

 private:
  std::string path_;
  int rank_;
  Config saved_;
  bool rehoming_;
};

class Stateful {
 public:
  virtual ~Stateful() = default;
  virtual void save(ParallelCheckpointWriter& w) = 0;
  virtual void load(const StateReader& r) = 0;
};

template <class T>
std::span<const T> as_span(const std::vector<T>& v) {
  return std::span<const T>(v.data(), v.size());
}

}  // namespace px
