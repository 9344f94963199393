// GoogleTest main for MPI tests (run under mpiexec by ctest, see px_add_mpi_test in
// tests/CMakeLists.txt). Every rank runs every test; tests call collectives together.
//
//  - Rank 0 keeps GoogleTest's result printer; other ranks are silent, except that a failed
//    assertion on ANY rank prints "rank K: <file>:<line> <message>" to stderr.
//  - The failure flag is all-reduced (MPI_MAX) and returned on every rank, so a test that
//    fails on one rank fails the whole run (a main that returns rank 0's result alone is a
//    test that cannot fail on the other ranks). Rank 0 also names the failing ranks.
//  - A watchdog thread calls MPI_Abort when the whole run (all tests of this executable) is
//    still going after PX_MPI_TEST_TIMEOUT seconds (env, default 120):
//    a deadlocked collective fails with a message instead of stalling CI.
//
// Writing MPI tests: skip uniformly (GTEST_SKIP on the world size, never on the rank), and
// prefer EXPECT_* to ASSERT_* before a collective: an ASSERT that returns early on one rank
// leaves the others waiting in the collective until the watchdog fires.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

int g_rank = 0;

// Prints failed assertions on every rank (rank 0's default printer shows them too, without
// the rank) and remembers the running test for the watchdog's message.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo& info) override {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard<std::mutex> lock(mu_);
    current_.clear();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "rank %d: %s:%d %s\n", g_rank, r.file_name() ? r.file_name() : "unknown",
                 r.line_number(), r.message());
    std::fflush(stderr);
  }
  std::string current() {
    std::lock_guard<std::mutex> lock(mu_);
    return current_;
  }

 private:
  std::mutex mu_;
  std::string current_;
};

// Aborts the whole job when the tests outlive `seconds`.
class Watchdog {
 public:
  Watchdog(double seconds, RankFailurePrinter* printer) {
    thread_ = std::thread([this, seconds, printer] {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return done_; })) return;
      const std::string test = printer->current();
      std::fprintf(stderr, "watchdog: test exceeded %g s on rank %d — deadlock? (running: %s; set "
                           "PX_MPI_TEST_TIMEOUT to change the limit)\n",
                   seconds, g_rank, test.empty() ? "outside a test" : test.c_str());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 124);
      std::_Exit(124);  // MPI_Abort does not return; in case it does
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

double watchdog_seconds() {
  const char* env = std::getenv("PX_MPI_TEST_TIMEOUT");
  if (!env || !*env) return 120.0;
  char* end = nullptr;
  const double s = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(s > 0)) {
    std::fprintf(stderr, "PX_MPI_TEST_TIMEOUT=%s is not a positive number of seconds; using 120\n", env);
    return 120.0;
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  // THREAD_MULTIPLE so that the watchdog thread may legally call MPI_Abort while the main
  // thread is blocked inside a collective.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (provided < MPI_THREAD_MULTIPLE && g_rank == 0)
    std::fprintf(stderr, "main_mpi: MPI provides thread level %d < MPI_THREAD_MULTIPLE; the watchdog's "
                         "MPI_Abort from its own thread relies on the implementation\n", provided);
  ::testing::InitGoogleTest(&argc, argv);

  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (g_rank != 0) delete listeners.Release(listeners.default_result_printer());
  auto* printer = new RankFailurePrinter;  // owned by GoogleTest
  listeners.Append(printer);

  int failed = 0;
  {
    Watchdog watchdog(watchdog_seconds(), printer);
    failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    // Still under the watchdog: a rank that never arrives here (crashed, deadlocked) must
    // not hang the others.
    std::vector<int> per_rank(g_rank == 0 ? size : 0);
    MPI_Gather(&failed, 1, MPI_INT, per_rank.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (g_rank == 0) {
      std::string ranks;
      for (int r = 0; r < size; ++r)
        if (per_rank[r]) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
      if (!ranks.empty())
        std::fprintf(stderr, "MPI test FAILED on ranks %s of %d\n", ranks.c_str(), size);
    }
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    failed = any;
  }
  MPI_Finalize();
  return failed;
}
