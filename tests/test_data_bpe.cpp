// Byte-level BPE tokenizer: pre-split, round trips, training, tokenizer.h5.
#include <gtest/gtest.h>

#include "temp_dir.hpp"  // defines: px::test::TempDir
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "data/bpe_tokenizer.hpp"
#include "util/errors.hpp"

namespace fs = std::filesystem;
using px::BpeTokenizer;

namespace {

const char* kEnglish =
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it "
    "was the winter of despair, we had everything before us, we had nothing before us, we "
    "were all going direct to Heaven, we were all going direct the other way -- in short, "
    "the period was so far like the present period, that some of its noisiest authorities "
    "insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only.\n\n  There were 1775 kings with a large jaw and a queen with a plain "
    "face, on the throne of England; naïve café déjà vu.\t\r\n";

std::string random_bytes(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(byte(rng));
  return s;
}

using px::test::TempDir;

std::string big_english() {
  std::string s;
  for (int i = 0; i < 20; ++i) s += kEnglish;
  return s;
}

}  // namespace

TEST(BpeSplit, WordsCoverTextAndFollowGpt2Rules) {
  const std::string text = "Hello  world, 123abc!!\n\n  x";
  auto words = px::split_words(text);
  std::string joined;
  for (auto w : words) joined += w;
  EXPECT_EQ(joined, text);
  std::vector<std::string> got(words.begin(), words.end());
  std::vector<std::string> want = {"Hello", " ", " world", ",", " 123", "abc", "!!", "\n\n ",
                                   " x"};
  EXPECT_EQ(got, want);
}

TEST(BpeSplit, LongRunsAreCut) {
  const std::string text(1000, '=');
  auto words = px::split_words(text);
  ASSERT_EQ(words.size(), 4u);
  for (auto w : words) EXPECT_LE(w.size(), static_cast<size_t>(px::kBpeMaxWordBytes));
}

TEST(BpeTokenizer, ByteFallbackRoundTripsRandomBytes) {
  BpeTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 256);
  std::mt19937 rng(1);
  const std::string s = random_bytes(rng, 5000);
  const auto ids = tok.encode(s);
  EXPECT_EQ(ids.size(), s.size());
  EXPECT_EQ(tok.decode(ids), s);
}

TEST(BpeTokenizer, TrainedRoundTripsRandomBytesAndEnglish) {
  std::mt19937 rng(2);
  const std::string corpus = big_english() + random_bytes(rng, 2000);
  const auto tok = BpeTokenizer::train(corpus, 400);
  EXPECT_GT(tok.vocab_size(), 256);
  for (int trial = 0; trial < 20; ++trial) {
    const std::string s = random_bytes(rng, 1 + trial * 97);
    ASSERT_EQ(tok.decode(tok.encode(s)), s) << "trial " << trial;
  }
  EXPECT_EQ(tok.decode(tok.encode(kEnglish)), kEnglish);
  EXPECT_EQ(tok.decode(tok.encode("")), "");
  const std::string zeros("\0\0a\0", 4);
  EXPECT_EQ(tok.decode(tok.encode(zeros)), zeros);
}

TEST(BpeTokenizer, MergesShortenTheEncoding) {
  const std::string corpus = big_english();
  const auto tok = BpeTokenizer::train(corpus, 512);
  EXPECT_EQ(tok.vocab_size(), 512);
  const auto ids = tok.encode(kEnglish);
  EXPECT_LT(ids.size() * 2, std::string(kEnglish).size())
      << "BPE should at least halve the byte count on its own training text";
  int max_id = 0;
  for (int id : ids) max_id = std::max(max_id, id);
  EXPECT_GE(max_id, 256);
  EXPECT_LT(max_id, tok.vocab_size());
}

TEST(BpeTokenizer, FirstMergeIsTheMostFrequentPair) {
  // "ab" occurs 3 times (in words), "cd" twice: the first merge must be (a, b).
  const auto tok = BpeTokenizer::train("ab ab ab cd cd", 257);
  ASSERT_EQ(tok.merges().size(), 1u);
  EXPECT_EQ(tok.merges()[0], std::make_pair(int32_t('a'), int32_t('b')));
  EXPECT_EQ(tok.encode("ab"), std::vector<int32_t>{256});
}

// Reference trainer: recounts every pair over the word table before each merge.
std::vector<std::pair<int32_t, int32_t>> naive_merges(const std::string& text, int vocab) {
  std::map<std::string, int64_t> freq;
  for (auto w : px::split_words(text)) ++freq[std::string(w)];
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [w, f] : freq) {
    std::vector<int32_t> sym;
    for (char c : w) sym.push_back(static_cast<unsigned char>(c));
    words.emplace_back(sym, f);
  }
  std::vector<std::pair<int32_t, int32_t>> merges;
  while (256 + static_cast<int>(merges.size()) < vocab) {
    std::map<std::pair<int32_t, int32_t>, int64_t> count;
    for (const auto& [sym, f] : words)
      for (size_t k = 0; k + 1 < sym.size(); ++k) count[{sym[k], sym[k + 1]}] += f;
    if (count.empty()) break;
    auto best = count.begin();  // map order: ties go to the smaller pair
    for (auto it = count.begin(); it != count.end(); ++it)
      if (it->second > best->second) best = it;
    const auto [a, b] = best->first;
    const int32_t id = 256 + static_cast<int32_t>(merges.size());
    merges.push_back(best->first);
    for (auto& [sym, f] : words) {
      std::vector<int32_t> out;
      for (size_t k = 0; k < sym.size(); ++k) {
        if (k + 1 < sym.size() && sym[k] == a && sym[k + 1] == b) {
          out.push_back(id);
          ++k;
        } else {
          out.push_back(sym[k]);
        }
      }
      sym = out;
    }
  }
  return merges;
}

TEST(BpeTokenizer, IncrementalTrainingMatchesNaiveRecount) {
  std::mt19937 rng(4);
  std::string corpus = big_english() + "aaaaaaa abababab " + random_bytes(rng, 1500);
  const auto fast = BpeTokenizer::train(corpus, 700);
  const auto slow = naive_merges(corpus, 700);
  ASSERT_EQ(fast.merges().size(), slow.size());
  for (size_t r = 0; r < slow.size(); ++r) ASSERT_EQ(fast.merges()[r], slow[r]) << "merge " << r;
}

TEST(BpeTokenizer, TrainingIsDeterministic) {
  std::mt19937 rng(3);
  const std::string corpus = big_english() + random_bytes(rng, 3000);
  const auto a = BpeTokenizer::train(corpus, 600);
  const auto b = BpeTokenizer::train(corpus, 600);
  EXPECT_EQ(a.merges(), b.merges());
  EXPECT_EQ(a.encode(corpus), b.encode(corpus));
}

TEST(BpeTokenizer, EncodeMatchesTrainingSegmentation) {
  // Training counts of the last merge must be reproducible by encoding: encoding the corpus
  // with the learned merges and counting occurrences of each merged id gives positive counts.
  const std::string corpus = big_english();
  const auto tok = BpeTokenizer::train(corpus, 300);
  const auto ids = tok.encode(corpus);
  std::vector<int> seen(tok.vocab_size(), 0);
  for (int id : ids) ++seen[id];
  // The last merge is used at least once (nothing merges it further).
  EXPECT_GT(seen[tok.vocab_size() - 1], 0);
}

TEST(BpeTokenizer, StopsEarlyWhenNoPairIsLeft) {
  const auto tok = BpeTokenizer::train("abab", 1000);
  // "abab": (a,b) -> 256, then (256,256) -> 257, then nothing.
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(tok.encode("abab"), std::vector<int32_t>{257});
  EXPECT_EQ(BpeTokenizer::train("", 300).vocab_size(), 256);
}

TEST(BpeTokenizer, VocabBelow256IsAUserError) {
  try {
    BpeTokenizer::train("hello", 100);
    FAIL() << "expected UserError";
  } catch (const px::UserError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--vocab"), std::string::npos) << msg;
    EXPECT_NE(msg.find("100"), std::string::npos) << msg;
    EXPECT_NE(msg.find("256"), std::string::npos) << msg;
  }
}

TEST(BpeTokenizer, DecodeTokenRejectsUnknownIds) {
  BpeTokenizer tok;
  EXPECT_EQ(tok.decode_token('A'), "A");
  EXPECT_THROW(tok.decode_token(256), std::out_of_range);
  EXPECT_THROW(tok.decode_token(-1), std::out_of_range);
}

TEST(BpeTokenizer, SaveLoadRoundTrip) {
  TempDir dir;
  const auto tok = BpeTokenizer::train(big_english(), 450);
  const std::string path = (dir.path / "tokenizer.h5").string();
  tok.save(path);
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const auto back = BpeTokenizer::load(path);
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  EXPECT_EQ(back.merges(), tok.merges());
  EXPECT_EQ(back.encode(kEnglish), tok.encode(kEnglish));

  BpeTokenizer bytes;  // no merges: an empty [0,2] dataset
  const std::string p2 = (dir.path / "bytes.h5").string();
  bytes.save(p2);
  EXPECT_EQ(BpeTokenizer::load(p2).vocab_size(), 256);
}

TEST(BpeTokenizer, LoadMissingOrCorruptFileNamesThePath) {
  TempDir dir;
  const std::string missing = (dir.path / "nope.h5").string();
  try {
    BpeTokenizer::load(missing);
    FAIL() << "expected UserError";
  } catch (const px::UserError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  const std::string junk = (dir.path / "junk.h5").string();
  std::ofstream(junk) << "this is not hdf5";
  try {
    BpeTokenizer::load(junk);
    FAIL() << "expected UserError";
  } catch (const px::UserError& e) {
    EXPECT_NE(std::string(e.what()).find(junk), std::string::npos) << e.what();
  }
}
