// Metrics: metrics.h5 rows (1-D and N-D), reopen-and-append, truncate_after_step, JSONL,
// and a killed writer keeps what it flushed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "io/h5.hpp"
#include "io/metrics_writer.hpp"
#include "util/errors.hpp"

namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("px_test_metrics_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

template <class T>
std::vector<T> read(const fs::path& dir, const std::string& path) {
  px::h5::File f = px::h5::open_file((dir / "metrics.h5").string(), false);
  return px::h5::read_array<T>(f, path);
}

std::vector<hsize_t> shape(const fs::path& dir, const std::string& path) {
  px::h5::File f = px::h5::open_file((dir / "metrics.h5").string(), false);
  return px::h5::dataset_shape(f, path);
}

std::vector<std::string> lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Logs one interval the way the trainer does.
void log_step(px::MetricsWriter& w, int64_t step, double loss) {
  w.append("/train/step", step);
  w.append("/train/loss", loss);
  w.append_row("/memory/peak_bytes", std::vector<int64_t>{step * 10, step * 20}, {2});
  std::vector<double> load(2 * 3, double(step));
  w.append_row("/experts/load", load, {2, 3});
  w.log_jsonl({{"step", double(step)}, {"loss", loss}});
}

}  // namespace

TEST(Metrics, AppendRowsAndJsonl) {
  fs::path d = temp_dir("append");
  {
    px::MetricsWriter w(d.string());
    for (int s = 10; s <= 30; s += 10) log_step(w, s, 5.0 - s / 10.0);
    w.append("/eval/step", 20);
    w.append("/eval/loss", 3.25);
  }
  EXPECT_EQ(read<int64_t>(d, "/train/step"), (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(read<double>(d, "/train/loss"), (std::vector<double>{4.0, 3.0, 2.0}));
  EXPECT_EQ(shape(d, "/memory/peak_bytes"), (std::vector<hsize_t>{3, 2}));
  EXPECT_EQ(read<int64_t>(d, "/memory/peak_bytes"), (std::vector<int64_t>{100, 200, 200, 400, 300, 600}));
  EXPECT_EQ(shape(d, "/experts/load"), (std::vector<hsize_t>{3, 2, 3}));
  EXPECT_EQ(read<double>(d, "/eval/loss"), (std::vector<double>{3.25}));
  auto l = lines(d / "metrics.jsonl");
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0], "{\"step\": 10, \"loss\": 4}");
  fs::remove_all(d);
}

TEST(Metrics, RowShapeMismatchThrows) {
  fs::path d = temp_dir("shape");
  px::MetricsWriter w(d.string());
  w.append_row("/comm/island/bytes", std::vector<int64_t>{1, 2}, {2});
  EXPECT_THROW(w.append_row("/comm/island/bytes", std::vector<int64_t>{1, 2, 3}, {3}), px::h5::Error);
  EXPECT_THROW(w.append_row("/comm/island/bytes", std::vector<int64_t>{1, 2, 3}, {2}), px::h5::Error);
  fs::remove_all(d);
}

TEST(Metrics, ReopenAppendsAndTruncates) {
  fs::path d = temp_dir("resume");
  {
    px::MetricsWriter w(d.string());
    for (int s = 10; s <= 50; s += 10) log_step(w, s, 1.0 * s);
    w.append("/eval/step", 25);
    w.append("/eval/loss", 0.5);
    w.append("/eval/step", 50);
    w.append("/eval/loss", 0.25);
  }
  {
    // Resume from a checkpoint at step 30: rows of steps 40 and 50 go, then logging goes on.
    px::MetricsWriter w(d.string());
    w.truncate_after_step(30);
    EXPECT_EQ(read<int64_t>(d, "/train/step"), (std::vector<int64_t>{10, 20, 30}));
    EXPECT_EQ(shape(d, "/experts/load"), (std::vector<hsize_t>{3, 2, 3}));
    EXPECT_EQ(read<double>(d, "/eval/loss"), (std::vector<double>{0.5}));
    EXPECT_EQ(lines(d / "metrics.jsonl").size(), 3u);
    log_step(w, 40, 99.0);
  }
  EXPECT_EQ(read<int64_t>(d, "/train/step"), (std::vector<int64_t>{10, 20, 30, 40}));
  EXPECT_EQ(read<double>(d, "/train/loss"), (std::vector<double>{10, 20, 30, 99}));
  EXPECT_EQ(shape(d, "/memory/peak_bytes"), (std::vector<hsize_t>{4, 2}));
  EXPECT_EQ(read<int64_t>(d, "/memory/peak_bytes")[6], 400);
  auto l = lines(d / "metrics.jsonl");
  ASSERT_EQ(l.size(), 4u);
  EXPECT_EQ(l[3], "{\"step\": 40, \"loss\": 99}");
  fs::remove_all(d);
}

TEST(Metrics, CorruptedFileOnReopenIsUserError) {
  fs::path d = temp_dir("corrupt");
  fs::create_directories(d);
  std::ofstream(d / "metrics.h5") << "this is not an HDF5 file";
  try {
    px::MetricsWriter w(d.string());
    ADD_FAILURE() << "expected UserError";
  } catch (const px::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.h5"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

TEST(Metrics, KilledWriterKeepsFlushedRows) {
  fs::path d = temp_dir("killed");
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // child: log three intervals, then die without closing anything
    px::MetricsWriter w(d.string());
    for (int s = 1; s <= 3; ++s) log_step(w, s, 1.0);
    ::raise(SIGKILL);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(read<int64_t>(d, "/train/step"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(lines(d / "metrics.jsonl").size(), 3u);
  px::MetricsWriter w(d.string());  // and a resumed run can append to it
  log_step(w, 4, 1.0);
  fs::remove_all(d);
}
