// `parallax inspect`: a summary that names the attributes and datasets of a file.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/token_shards.hpp"
#include "io/inspect.hpp"
#include "util/errors.hpp"

using namespace px;

TEST(Inspect, ShardSummaryAndMissingFile) {
  const std::string dir = std::string(PX_BINARY_DIR) + "/test_tmp/inspect_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  write_token_shard(dir + "/train.h5", {5, 7, 9, 300}, 512);
  const std::string s = inspect_h5(dir + "/train.h5");
  EXPECT_NE(s.find("@vocab_size = 512"), std::string::npos) << s;
  EXPECT_NE(s.find("@n_tokens = 4"), std::string::npos) << s;
  EXPECT_NE(s.find("tokens"), std::string::npos) << s;
  EXPECT_NE(s.find("[4]  first 5 last 300"), std::string::npos) << s;
  EXPECT_THROW(inspect_h5(dir + "/nothing.h5"), UserError);
  std::filesystem::remove_all(dir);
}
