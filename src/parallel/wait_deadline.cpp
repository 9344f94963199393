// defines: set_wait_deadline, wait_deadline, WaitScope, tag_meaning
#include "parallel/wait_deadline.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "wire/mpi_tags.hpp"  // defines: MpiTag

namespace px {

namespace {

using clock_type = std::chrono::steady_clock;

struct Watch {
  std::mutex mu;
  double deadline_s = 0;
  int world_rank = -1;
  bool started = false;
  int depth = 0;  // open scopes
  clock_type::time_point since;
  const char* call = "";
  std::string comm;
  int size = 0, peer = -1, tag = -1;
};

Watch& watch() {
  static Watch w;
  return w;
}

std::string describe(const Watch& w, double waited) {
  std::string whom = w.peer >= 0 ? fmt::format("for rank {}", w.peer)
                 : w.size > 0 ? fmt::format("for any or all of its {} ranks", w.size)
                              : std::string("for a pending message");
  if (w.tag >= 0) {
    const char* meaning = tag_meaning(w.tag);
    whom += fmt::format(", tag {}{}{}", w.tag, *meaning ? ": " : "", meaning);
  }
  return fmt::format(
      "parallax: rank {} waited {:.1f} s (sync.timeout_s = {:g}) in {} on communicator \"{}\" {}; "
      "a rank it waits for is stopped, dead or far slower. Ending this rank (exit 3) so that the "
      "job aborts; raise sync.timeout_s if such waits are expected (0 = no deadline)\n",
      w.world_rank, waited, w.deadline_s, w.call, w.comm, whom);
}

void watchdog_loop() {
  Watch& w = watch();
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::lock_guard<std::mutex> lk(w.mu);
    if (w.depth == 0 || w.deadline_s <= 0) continue;
    const double waited = std::chrono::duration<double>(clock_type::now() - w.since).count();
    if (waited <= w.deadline_s) continue;
    const std::string msg = describe(w, waited);
    std::fputs(msg.c_str(), stderr);
    std::fflush(stderr);
    std::_Exit(3);
  }
}

}  // namespace

void set_wait_deadline(double seconds, int world_rank) {
  Watch& w = watch();
  std::lock_guard<std::mutex> lk(w.mu);
  w.deadline_s = seconds;
  w.world_rank = world_rank;
  if (seconds > 0 && !w.started) {
    std::thread(watchdog_loop).detach();
    w.started = true;
  }
}

double wait_deadline() {
  Watch& w = watch();
  std::lock_guard<std::mutex> lk(w.mu);
  return w.deadline_s;
}

WaitScope::WaitScope(const char* call, const char* comm, int size, int peer, int tag) {
  Watch& w = watch();
  std::lock_guard<std::mutex> lk(w.mu);
  if (w.depth++ > 0) return;
  w.since = clock_type::now();
  w.call = call;
  w.comm = comm;
  w.size = size;
  w.peer = peer;
  w.tag = tag;
}

WaitScope::~WaitScope() {
  Watch& w = watch();
  std::lock_guard<std::mutex> lk(w.mu);
  --w.depth;
}

const char* tag_meaning(int tag) {
  if (tag >= TAG_REPLY) return "a backbone reply from a syncer";
  switch (tag) {
    case TAG_SKETCH: return "a sketch bundle";
    case TAG_SNAPSHOT: return "a view message from a home";
    case TAG_ADAPTER: return "an adapter delta message";
    case TAG_STOP: return "a stop proposal";
    case TAG_REPORT: return "an island's metrics report";
    case TAG_DONE: return "a learner's DONE";
    case TAG_CKPT: return "a checkpoint notice";
    case TAG_TICK: return "an island's step tick";
    case TAG_WAIT: return "an island's agreement notice";
    case TAG_PUSH: return "a backbone push";
    default: return "";
  }
}

}  // namespace px
