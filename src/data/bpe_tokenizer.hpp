#pragma once
// Byte-level BPE tokenizer (DESIGN §2 "Tokenizer", §8 `parallax data prepare`).
//  - ids 0..255 are raw bytes; merge r (0-based) creates id 256 + r from two existing ids.
//  - text is first pre-split into words (split_words below); merges never cross words.
//  - a default-constructed tokenizer has no merges: the raw-byte fallback, V = 256.
// On disk (tokenizer.h5): dataset /merges int32 [M,2] (left id, right id of merge r in row r)
// and root attribute vocab_size = 256 + M.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace px {

// Longest word the pre-split produces; longer runs are cut (bounds the cost of encoding).
inline constexpr int kBpeMaxWordBytes = 256;

// GPT-2-like pre-split of `text` into consecutive words (views into `text`, covering it
// exactly): runs of letters (bytes >= 0x80 count as letters, so UTF-8 stays together),
// runs of digits, runs of other non-space bytes — each with an optional leading ' ' — and
// whitespace runs (a run followed by a word leaves its last ' ' to that word).
std::vector<std::string_view> split_words(std::string_view text);

class BpeTokenizer {
 public:
  // Called during training every 256 merges and after the last one:
  // (merges done so far, frequency of the most recent merge).
  using Progress = std::function<void(int merges, int64_t count)>;

  // The raw-byte tokenizer (no merges, vocab_size() == 256).
  BpeTokenizer() { rebuild_tables(); }

  // Learns up to vocab - 256 merges from `text` (deterministic: most frequent pair first,
  // ties broken by the smaller (left, right) id pair). Stops early when no pair is left, so
  // vocab_size() may be smaller than `vocab`. Throws UserError naming --vocab when vocab < 256.
  static BpeTokenizer train(const std::string& text, int vocab, const Progress& progress = {});

  // Builds a tokenizer from a merge list (row r creates id 256 + r). Throws UserError when a
  // merge refers to an id that does not exist yet; `source` names where the list came from.
  static BpeTokenizer from_merges(std::vector<std::pair<int32_t, int32_t>> merges,
                                  const std::string& source = "merge list");

  // Token ids of `text`; decode(encode(s)) == s for every byte string. Caches per word, so
  // it is not safe to call concurrently on one tokenizer.
  std::vector<int32_t> encode(std::string_view text) const;

  // Bytes of a token sequence / of one token. Throws std::out_of_range for an id outside
  // [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;
  const std::string& decode_token(int id) const;

  int vocab_size() const { return 256 + static_cast<int>(merges_.size()); }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }

  // Writes tokenizer.h5 to `path` (through a temporary file, renamed when complete).
  // Throws UserError naming the path when it cannot be written.
  void save(const std::string& path) const;
  // Reads a file written by save(). Throws UserError naming the path when it is missing,
  // not HDF5, or does not hold a valid merge list.
  static BpeTokenizer load(const std::string& path);

 private:
  void rebuild_tables();  // fills bytes_ and rank_ from merges_
  const std::vector<int32_t>& encode_word(std::string_view word) const;

  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<std::string> bytes_;               // id -> its bytes
  std::unordered_map<uint64_t, int32_t> rank_;  // packed (left, right) -> merge index
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // word -> ids
};

}  // namespace px
