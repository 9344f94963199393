// Token shards, the window loader, and `data prepare` end to end.
#include <gtest/gtest.h>

#include "temp_dir.hpp"  // defines: px::test::TempDir
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <functional>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>

#include "data/bpe_tokenizer.hpp"
#include "data/prepare.hpp"
#include "data/token_shards.hpp"
#include "util/errors.hpp"

namespace fs = std::filesystem;

namespace {

using px::test::TempDir;

std::vector<int32_t> iota_tokens(int n, int start = 1000) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

void expect_user_error_mentions(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected UserError mentioning " << needle;
  } catch (const px::UserError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A fortune-style file with n entries.
std::string fortunes(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += fmt::format("Fortune number {} says: the quick brown fox {} jumps.\n", i, i * 7);
    s += "  -- anonymous\n%\n";
  }
  return s;
}

}  // namespace

TEST(TokenShards, WriteReadRoundTrip) {
  TempDir dir;
  const auto tokens = iota_tokens(12345);
  px::write_token_shard(dir / "train.h5", tokens, 4096);
  EXPECT_FALSE(fs::exists(dir / "train.h5.tmp"));
  px::TokenSplit split(dir.path.string(), "train");
  EXPECT_EQ(split.tokens(), tokens);
  EXPECT_EQ(split.size(), 12345);
  EXPECT_EQ(split.split_tokens(), 12345);
  EXPECT_EQ(split.offset(), 0);
  EXPECT_EQ(split.vocab_size(), 4096);
}

TEST(TokenShards, PartsAreDisjointAndCoverTheSplit) {
  TempDir dir;
  const auto tokens = iota_tokens(1001);
  px::write_token_shard(dir / "val.h5", tokens, 300);
  for (int parts : {1, 2, 3, 7}) {
    std::vector<int32_t> joined;
    int64_t expect_offset = 0;
    for (int p = 0; p < parts; ++p) {
      px::TokenSplit s(dir.path.string(), "val", p, parts);
      EXPECT_EQ(s.offset(), expect_offset) << "part " << p << "/" << parts;
      expect_offset += s.size();
      joined.insert(joined.end(), s.tokens().begin(), s.tokens().end());
    }
    EXPECT_EQ(joined, tokens) << parts << " parts";
  }
  EXPECT_THROW(px::TokenSplit(dir.path.string(), "val", 2, 2), std::invalid_argument);
}

TEST(TokenShards, MissingDirFileOrDatasetIsAUserError) {
  TempDir dir;
  const std::string nodir = dir / "nope";
  expect_user_error_mentions([&] { px::TokenSplit(nodir, "train"); }, nodir);
  expect_user_error_mentions([&] { px::TokenSplit(dir.path.string(), "train"); }, "data prepare");
  expect_user_error_mentions([&] { px::TokenSplit(dir.path.string(), "train"); },
                             dir / "train.h5");
  write_file(dir / "train.h5", "garbage");
  expect_user_error_mentions([&] { px::TokenSplit(dir.path.string(), "train"); },
                             dir / "train.h5");
  // An HDF5 file without /tokens (a tokenizer file under the wrong name).
  px::BpeTokenizer().save(dir / "val.h5");
  expect_user_error_mentions([&] { px::TokenSplit(dir.path.string(), "val"); }, "/tokens");
}

TEST(TokenLoader, TargetsAreInputsShiftedByOne) {
  TempDir dir;
  const auto tokens = iota_tokens(500);
  px::write_token_shard(dir / "train.h5", tokens, 2000);
  px::TokenSplit split(dir.path.string(), "train");
  px::TokenLoader loader(split, 16);
  const int B = 3, T = 16;
  std::vector<int32_t> x(B * T), y(B * T);
  for (int step = 0; step < 20; ++step) {
    const int64_t c = loader.cursor();
    loader.next_batch(B, T, x.data(), y.data());
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t + 1 < T; ++t) EXPECT_EQ(y[b * T + t], x[b * T + t + 1]);
      EXPECT_EQ(y[b * T + T - 1], x[b * T + T - 1] + 1);  // iota: next token is +1
      // Window b starts (c + b*T) mod W tokens into the split, W = 500 - T.
      EXPECT_EQ(x[b * T], 1000 + (c + b * T) % (500 - T));
    }
    EXPECT_EQ(loader.cursor(), (c + B * T) % (500 - T));
  }
}

TEST(TokenLoader, CursorRestoreGivesIdenticalBatches) {
  TempDir dir;
  std::vector<int32_t> tokens(3000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919) % 2048);
  px::write_token_shard(dir / "train.h5", tokens, 2048);
  px::TokenSplit split(dir.path.string(), "train");
  const int B = 4, T = 32;
  px::TokenLoader a(split, T);
  std::vector<int32_t> x(B * T), y(B * T), x2(B * T), y2(B * T);
  for (int i = 0; i < 7; ++i) a.next_batch(B, T, x.data(), y.data());
  const int64_t saved = a.cursor();
  px::TokenLoader b(split, T);
  b.set_cursor(saved);
  for (int i = 0; i < 50; ++i) {  // crosses the wrap-around
    a.next_batch(B, T, x.data(), y.data());
    b.next_batch(B, T, x2.data(), y2.data());
    ASSERT_EQ(x, x2) << "batch " << i;
    ASSERT_EQ(y, y2) << "batch " << i;
  }
  EXPECT_THROW(b.set_cursor(-1), px::UserError);
}

TEST(TokenLoader, EvalBatchesAreDeterministic) {
  TempDir dir;
  px::write_token_shard(dir / "val.h5", iota_tokens(1000, 0), 1000);
  px::TokenSplit split(dir.path.string(), "val");
  px::TokenLoader loader(split, 8);
  const int B = 2, T = 8;
  std::vector<int32_t> x(B * T), y(B * T), x2(B * T), y2(B * T);
  loader.eval_batch(3, B, T, x.data(), y.data());
  loader.next_batch(B, T, x2.data(), y2.data());  // moving the cursor changes nothing
  loader.eval_batch(3, B, T, x2.data(), y2.data());
  EXPECT_EQ(x, x2);
  EXPECT_EQ(x[0], 3 * B * T);
  EXPECT_EQ(x[T], 3 * B * T + T);
  EXPECT_EQ(loader.batches_per_epoch(B, T), (1000 - T) / (B * T));
}

TEST(TokenLoader, SplitTooSmallForSeqLenIsAUserError) {
  TempDir dir;
  px::write_token_shard(dir / "val.h5", iota_tokens(10), 300);
  px::TokenSplit split(dir.path.string(), "val");
  EXPECT_NO_THROW(px::TokenLoader(split, 9));
  expect_user_error_mentions([&] { px::TokenLoader(split, 10); }, "seq_len 10");
}

TEST(DataPrepare, DocumentsAndValidationRule) {
  const auto docs = px::split_documents({fortunes(45)});
  ASSERT_EQ(docs.size(), 45u);
  EXPECT_EQ(docs[0], "Fortune number 0 says: the quick brown fox 0 jumps.\n  -- anonymous");
  // Few '%' documents: paragraphs instead.
  const auto paras = px::split_documents({"one\ntwo\n\nthree\n\n\n four\n"});
  EXPECT_EQ(paras, (std::vector<std::string>{"one\ntwo", "three", " four"}));
  int val = 0;
  for (size_t i = 0; i < 45; ++i) val += px::is_validation_document(i, 45);
  EXPECT_EQ(val, 2);
  EXPECT_TRUE(px::is_validation_document(4, 5));
  EXPECT_FALSE(px::is_validation_document(0, 1));
}

TEST(DataPrepare, WalksDirectoriesWithSkipRules) {
  TempDir dir;
  fs::create_directories(dir.path / "sub");
  fs::create_directories(dir.path / ".hidden");
  write_file(dir / "b", "bee");
  write_file(dir / "b.dat", "index");
  fs::create_symlink("b", dir.path / "b.u8");
  write_file(dir / ".secret", "hidden");
  write_file(dir / ".hidden/x", "hidden");
  write_file(dir / "sub/a", "ay");
  write_file(dir / "bin", std::string("ab\0cd", 5));
  const auto files = px::collect_text_files({dir.path.string()});
  EXPECT_EQ(files, (std::vector<std::string>{dir / "b", dir / "sub/a"}));
  expect_user_error_mentions([&] { px::collect_text_files({dir / "missing"}); }, dir / "missing");
  expect_user_error_mentions([&] { px::collect_text_files({dir / "bin"}); }, dir / "bin");
  EXPECT_THROW(px::collect_text_files({}), px::UserError);
}

TEST(DataPrepare, WritesTokenizerAndSplitsThatRoundTrip) {
  TempDir dir;
  write_file(dir / "corpus", fortunes(100));
  const std::string out = dir / "out";
  const auto sum = px::data_prepare({dir / "corpus"}, out, 300);
  EXPECT_EQ(sum.documents, 100);
  EXPECT_EQ(sum.vocab_size, 300);
  for (const char* f : {"tokenizer.h5", "train.h5", "val.h5"}) {
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;
    EXPECT_FALSE(fs::exists(fs::path(out) / (std::string(f) + ".tmp"))) << f;
  }
  const auto tok = px::BpeTokenizer::load((fs::path(out) / "tokenizer.h5").string());
  px::TokenSplit train(out, "train"), val(out, "val");
  EXPECT_EQ(train.size(), sum.train_tokens);
  EXPECT_EQ(val.size(), sum.val_tokens);
  EXPECT_EQ(train.vocab_size(), tok.vocab_size());
  // Validation holds documents 19, 39, ..., 99, each followed by "\n\n".
  const auto docs = px::split_documents({fortunes(100)});
  std::string want;
  for (int i = 19; i < 100; i += 20) want += docs[i] + "\n\n";
  EXPECT_EQ(tok.decode(val.tokens()), want);
  EXPECT_LT(train.size(), sum.bytes) << "BPE should compress";
}

TEST(DataPrepare, SingleDocumentGivesTwoNonEmptySplits) {
  TempDir dir;
  write_file(dir / "one", "just one short document\nwith two lines\n");
  const auto sum = px::data_prepare({dir / "one"}, dir / "out", 256);
  EXPECT_GT(sum.train_tokens, 2);
  EXPECT_GT(sum.val_tokens, 2);
}

TEST(DataPrepare, BadInputsAreUserErrors) {
  TempDir dir;
  expect_user_error_mentions([&] { px::data_prepare({}, dir / "out", 512); }, "--input");
  expect_user_error_mentions([&] { px::data_prepare({dir / "missing"}, dir / "out", 512); },
                             dir / "missing");
  write_file(dir / "empty", "\n\n  \n");
  expect_user_error_mentions([&] { px::data_prepare({dir / "empty"}, dir / "out", 512); },
                             "no text");
  write_file(dir / "text", fortunes(30));
  expect_user_error_mentions([&] { px::data_prepare({dir / "text"}, dir / "out", 255); },
                             "--vocab 255");
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// The demo corpus (DESIGN §8, Debian package `fortunes`); about half a second.
TEST(DataPrepare, FortunesCorpus) {
  if (!fs::is_directory("/usr/share/games/fortunes")) {
    GTEST_SKIP() << "needs /usr/share/games/fortunes (Debian package fortunes)";
  }
  TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  const auto sum = px::data_prepare({"/usr/share/games/fortunes"}, dir / "out", 2048);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("fortunes: %lld bytes, %lld docs, train %lld tokens, val %lld tokens, vocab %d, "
              "%.2f bytes/token, %.1f s\n",
              (long long)sum.bytes, (long long)sum.documents, (long long)sum.train_tokens,
              (long long)sum.val_tokens, sum.vocab_size,
              double(sum.bytes) / double(sum.train_tokens + sum.val_tokens), s);
  EXPECT_EQ(sum.vocab_size, 2048);
  EXPECT_GT(sum.val_tokens, 0);
  EXPECT_LT(s, 60.0);
  const auto tok = px::BpeTokenizer::load((dir.path / "out" / "tokenizer.h5").string());
  px::TokenSplit val((dir.path / "out").string(), "val");
  EXPECT_FALSE(tok.decode(val.tokens()).empty());
}
