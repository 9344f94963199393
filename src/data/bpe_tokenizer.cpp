// BpeTokenizer: pre-split, tables, encode and decode. Training is in bpe_train.cpp, the
// tokenizer.h5 format in bpe_file.cpp.
#include "data/bpe_tokenizer.hpp"

#include <fmt/format.h>

#include <limits>
#include <stdexcept>

#include "util/errors.hpp"  // defines: UserError

namespace px {
namespace {

enum CharClass { SPACE, LETTER, DIGIT, OTHER };

CharClass char_class(unsigned char c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') return SPACE;
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return LETTER;
  if (c >= '0' && c <= '9') return DIGIT;
  return OTHER;
}

uint64_t pack(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

std::vector<std::string_view> split_words(std::string_view s) {
  std::vector<std::string_view> words;
  const size_t n = s.size();
  size_t i = 0;
  auto cls = [&](size_t k) { return char_class(static_cast<unsigned char>(s[k])); };
  while (i < n) {
    if (cls(i) == SPACE) {
      size_t j = i;
      while (j < n && cls(j) == SPACE && j - i < kBpeMaxWordBytes) ++j;
      const bool word_follows = j < n && cls(j) != SPACE && s[j - 1] == ' ';
      if (!word_follows) {  // a plain whitespace run
        words.push_back(s.substr(i, j - i));
        i = j;
        continue;
      }
      if (j - 1 > i) {  // leave the last ' ' to the following word
        words.push_back(s.substr(i, j - 1 - i));
        i = j - 1;
        continue;
      }
      // a single ' ' before a word: it becomes the word's leading space (below)
    }
    const size_t start = i;
    if (s[i] == ' ') ++i;
    const CharClass c = cls(i);
    size_t j = i;
    while (j < n && cls(j) == c && j - start < kBpeMaxWordBytes) ++j;
    words.push_back(s.substr(start, j - start));
    i = j;
  }
  return words;
}

void BpeTokenizer::rebuild_tables() {
  bytes_.clear();
  bytes_.reserve(vocab_size());
  for (int b = 0; b < 256; ++b) bytes_.emplace_back(1, static_cast<char>(b));
  rank_.clear();
  for (size_t r = 0; r < merges_.size(); ++r) {
    const auto [a, b] = merges_[r];
    bytes_.push_back(bytes_[a] + bytes_[b]);
    rank_.emplace(pack(a, b), static_cast<int32_t>(r));
  }
  cache_.clear();
}

BpeTokenizer BpeTokenizer::from_merges(std::vector<std::pair<int32_t, int32_t>> merges,
                                       const std::string& source) {
  for (size_t r = 0; r < merges.size(); ++r) {
    const int64_t limit = 256 + static_cast<int64_t>(r);  // ids that exist before merge r
    const auto [a, b] = merges[r];
    if (a < 0 || b < 0 || a >= limit || b >= limit) {
      throw UserError(fmt::format(
          "{}: merge {} is ({}, {}), but only ids 0..{} exist before it (corrupt tokenizer?)",
          source, r, a, b, limit - 1));
    }
  }
  BpeTokenizer tok;
  tok.merges_ = std::move(merges);
  tok.rebuild_tables();
  return tok;
}

const std::vector<int32_t>& BpeTokenizer::encode_word(std::string_view word) const {
  auto it = cache_.find(std::string(word));
  if (it != cache_.end()) return it->second;

  std::vector<int32_t> sym(word.begin(), word.end());
  for (auto& v : sym) v = static_cast<unsigned char>(v);
  // Apply merges in rank order: find the adjacent pair with the lowest rank, merge all its
  // (non-overlapping, left to right) occurrences, repeat. This reproduces training exactly.
  while (sym.size() > 1) {
    int32_t best = std::numeric_limits<int32_t>::max();
    for (size_t k = 0; k + 1 < sym.size(); ++k) {
      auto r = rank_.find(pack(sym[k], sym[k + 1]));
      if (r != rank_.end() && r->second < best) best = r->second;
    }
    if (best == std::numeric_limits<int32_t>::max()) break;
    const auto [a, b] = merges_[best];
    const int32_t id = 256 + best;
    size_t w = 0;
    for (size_t k = 0; k < sym.size(); ++k) {
      if (k + 1 < sym.size() && sym[k] == a && sym[k + 1] == b) {
        sym[w++] = id;
        ++k;
      } else {
        sym[w++] = sym[k];
      }
    }
    sym.resize(w);
  }
  return cache_.emplace(std::string(word), std::move(sym)).first->second;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  for (std::string_view w : split_words(text)) {
    const auto& part = encode_word(w);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

const std::string& BpeTokenizer::decode_token(int id) const {
  if (id < 0 || id >= vocab_size()) {
    throw std::out_of_range(
        fmt::format("token id {} is outside the tokenizer vocabulary [0, {})", id, vocab_size()));
  }
  return bytes_[id];
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += decode_token(id);
  return out;
}

}  // namespace px
