#pragma once
// How the metrics of decoupled islands (roles/stop_agreement.hpp: islands_decoupled) reach
// metrics.h5 without any island waiting for another: each island's leader sends its island's
// report of a log interval or an evaluation to learner 0 (TAG_REPORT on the learners' control
// communicator, non-blocking; learner 0 keeps its own island's), and learner 0 writes a row once
// every island's report of that step has arrived: late rows for a slow island, never a wait.
// At the end learner 0 waits for the rest (every island reports the same steps: they stop at
// the same step).
//
// Message: int64 kind, int64 step, int64 island, then the report's words (int64; doubles stored
// bit for bit).
#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "parallel/comm.hpp"      // defines: Comm
#include "parallel/topology.hpp"  // defines: Topology

namespace px {

class IslandReports {
 public:
  enum Kind : int64_t { INTERVAL = 0, EVAL = 1 };
  using Words = std::vector<int64_t>;
  struct Group {
    int64_t step = 0;
    std::vector<Words> islands;  // by island index
  };

  IslandReports(const Topology& topo, Comm& control);

  // Island leaders: my island's report of `step`.
  void report(Kind kind, int64_t step, const Words& words);
  // Learner 0: takes the reports that have arrived (never waits).
  void poll();
  // The end of the run: learner 0 waits for every report still missing; leaders for their sends.
  void drain();
  // Learner 0: the complete groups of `kind`, in step order, removed from the pending ones.
  std::vector<Group> take_complete(Kind kind);

 private:
  void add(Kind kind, int64_t step, int64_t island, Words words);
  void receive_one();
  bool complete(const Group& g) const;

  const Topology& topo_;
  Comm& control_;
  std::map<int64_t, Group> pending_[2];  // by kind, by step
  struct Send {
    Words msg;
    MPI_Request req = MPI_REQUEST_NULL;
  };
  std::vector<std::unique_ptr<Send>> sends_;
};

// Doubles in the words of a report, bit for bit.
int64_t word_of(double x);
double double_of(int64_t w);

}  // namespace px
