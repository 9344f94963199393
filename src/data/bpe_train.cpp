// BpeTokenizer::train — BPE merges learned over a word-frequency table.
//
// The text is pre-split into words once and unique words are counted. Pair counts (weighted
// by word frequency) are kept in a hash map, with, for each pair, the list of words that may
// contain it. A merge rewrites only the words on its pair's list and updates the counts of
// the pairs those words gain and lose; a max-heap with lazy deletion (an entry is stale when
// its count differs from the map) picks the next pair. Ties: the smaller (left, right) pair.
#include <fmt/format.h>

#include <algorithm>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "data/bpe_tokenizer.hpp"
#include "util/errors.hpp"  // defines: UserError

namespace px {
namespace {

uint64_t pack(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct HeapEntry {
  int64_t count;
  uint64_t pair;
  // priority_queue pops the largest: higher count first, then the smaller pair.
  bool operator<(const HeapEntry& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

struct Word {
  std::vector<int32_t> sym;
  int64_t freq;
};

// Unique words of `text` with their frequencies, in sorted (deterministic) order.
std::vector<Word> count_words(const std::string& text) {
  std::unordered_map<std::string_view, int64_t> freq;
  for (std::string_view w : split_words(text)) ++freq[w];
  std::vector<std::pair<std::string_view, int64_t>> sorted(freq.begin(), freq.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& [w, f] : sorted) {
    Word word{{}, f};
    word.sym.reserve(w.size());
    for (char c : w) word.sym.push_back(static_cast<unsigned char>(c));
    words.push_back(std::move(word));
  }
  return words;
}

class Trainer {
 public:
  explicit Trainer(std::vector<Word> words) : words_(std::move(words)) {
    for (size_t w = 0; w < words_.size(); ++w) {
      const auto& s = words_[w].sym;
      for (size_t k = 0; k + 1 < s.size(); ++k) {
        const uint64_t p = pack(s[k], s[k + 1]);
        count_[p] += words_[w].freq;
        where_[p].push_back(static_cast<int32_t>(w));
      }
    }
    for (const auto& [p, c] : count_) heap_.push({c, p});
  }

  // Pops the best live pair; false when none is left.
  bool best(uint64_t& pair, int64_t& count) {
    while (!heap_.empty()) {
      const HeapEntry e = heap_.top();
      heap_.pop();
      auto it = count_.find(e.pair);
      if (it == count_.end() || it->second != e.count || e.count <= 0) continue;  // stale
      pair = e.pair;
      count = e.count;
      return true;
    }
    return false;
  }

  // Replaces every occurrence of `pair` by `id` and updates the pair counts.
  void merge(uint64_t pair, int32_t id) {
    const int32_t a = static_cast<int32_t>(pair >> 32);
    const int32_t b = static_cast<int32_t>(pair & 0xffffffffu);
    std::vector<int32_t> list = std::move(where_[pair]);
    where_.erase(pair);
    count_.erase(pair);
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());

    for (int32_t w : list) {
      auto& s = words_[w].sym;
      const int64_t f = words_[w].freq;
      bool found = false;
      for (size_t k = 0; k + 1 < s.size() && !found; ++k) found = s[k] == a && s[k + 1] == b;
      if (!found) continue;  // stale list entry: an earlier merge consumed the pair here

      delta_.clear();
      for (size_t k = 0; k + 1 < s.size(); ++k) delta_.push_back({pack(s[k], s[k + 1]), -f});
      size_t out = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        if (k + 1 < s.size() && s[k] == a && s[k + 1] == b) {
          s[out++] = id;
          ++k;
        } else {
          s[out++] = s[k];
        }
      }
      s.resize(out);
      for (size_t k = 0; k + 1 < s.size(); ++k) {
        const uint64_t p = pack(s[k], s[k + 1]);
        delta_.push_back({p, +f});
        if (s[k] == id || s[k + 1] == id) where_[p].push_back(w);  // new pairs hold `id`
      }
      apply_deltas(pair);
    }
  }

 private:
  // Sums the per-pair changes of one word and applies the non-zero ones.
  void apply_deltas(uint64_t merged) {
    std::sort(delta_.begin(), delta_.end());
    for (size_t i = 0; i < delta_.size();) {
      const uint64_t p = delta_[i].first;
      int64_t d = 0;
      for (; i < delta_.size() && delta_[i].first == p; ++i) d += delta_[i].second;
      if (d == 0 || p == merged) continue;
      int64_t& c = count_[p];
      c += d;
      if (c > 0) heap_.push({c, p});
      else count_.erase(p);
    }
  }

  std::vector<Word> words_;
  std::unordered_map<uint64_t, int64_t> count_;
  std::unordered_map<uint64_t, std::vector<int32_t>> where_;
  std::priority_queue<HeapEntry> heap_;
  std::vector<std::pair<uint64_t, int64_t>> delta_;
};

}  // namespace

BpeTokenizer BpeTokenizer::train(const std::string& text, int vocab, const Progress& progress) {
  if (vocab < 256) {
    throw UserError(fmt::format(
        "--vocab {}: a byte-level BPE vocabulary needs at least 256 ids (the raw bytes)", vocab));
  }
  Trainer trainer(count_words(text));
  std::vector<std::pair<int32_t, int32_t>> merges;
  const int want = vocab - 256;
  merges.reserve(want);
  int64_t count = 0;
  uint64_t pair = 0;
  while (static_cast<int>(merges.size()) < want && trainer.best(pair, count)) {
    const int32_t id = 256 + static_cast<int32_t>(merges.size());
    merges.emplace_back(static_cast<int32_t>(pair >> 32),
                        static_cast<int32_t>(pair & 0xffffffffu));
    trainer.merge(pair, id);
    if (progress && merges.size() % 256 == 0) progress(static_cast<int>(merges.size()), count);
  }
  if (progress && merges.size() % 256 != 0) progress(static_cast<int>(merges.size()), count);
  return from_merges(std::move(merges), "BPE training");
}

}  // namespace px
