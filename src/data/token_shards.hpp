#pragma once
// Token shards (DESIGN §8): `parallax data prepare` writes DIR/train.h5 and DIR/val.h5, each
// with a 1-D int32 dataset /tokens (chunked, deflate) and root attributes vocab_size and
// n_tokens. TokenSplit reads one contiguous part of a split (each data-parallel island reads
// a disjoint part); TokenLoader cuts it into training and evaluation windows.
#include <cstdint>
#include <string>
#include <vector>

namespace px {

// Writes `tokens` as a token shard at `path` (through a temporary file renamed when
// complete). Throws UserError naming the path when it cannot be written.
void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens,
                       int vocab_size);

// The n_tokens attribute of DIR/<split>.h5; -1 when the file or the attribute is not readable
// (for `parallax plan`: the token shards a learner holds in memory).
int64_t shard_token_count(const std::string& dir, const std::string& split);

// The tokens of part `part` of `parts` of split `split` ("train" or "val") in `dir`:
// [part*n/parts, (part+1)*n/parts) of the n tokens of DIR/<split>.h5, read with a hyperslab.
class TokenSplit {
 public:
  // Throws UserError naming the path (and saying to run `parallax data prepare`) when the
  // directory, the file or its /tokens dataset is missing or unreadable;
  // std::invalid_argument when not 0 <= part < parts.
  TokenSplit(const std::string& dir, const std::string& split, int part = 0, int parts = 1);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t offset() const { return offset_; }        // first token of this part in the split
  int64_t split_tokens() const { return total_; }   // tokens in the whole split
  int vocab_size() const { return vocab_size_; }    // tokenizer vocabulary of the shard
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<int32_t> tokens_;
  int64_t offset_ = 0;
  int64_t total_ = 0;
  int vocab_size_ = 0;
};

// Windows of T+1 consecutive tokens over a TokenSplit (which must outlive the loader).
// Window starts live in [0, W) with W = size() - T; window k of a stream starting at
// position c starts at (c + k*T) mod W, so a batch of B windows moves the cursor by B*T and
// the stream wraps around at the end. Inputs are tokens [s, s+T), targets [s+1, s+T+1).
class TokenLoader {
 public:
  // Throws UserError when the part has fewer than seq_len + 1 tokens.
  TokenLoader(const TokenSplit& split, int seq_len);

  // Fills inputs[B*T] and targets[B*T] with B windows from the cursor; advances it by B*T.
  void next_batch(int B, int T, int32_t* inputs, int32_t* targets);
  // Evaluation batch `index`: B windows starting at index*B*T (independent of the cursor).
  void eval_batch(int64_t index, int B, int T, int32_t* inputs, int32_t* targets) const;
  // One window starting at position `start` (taken mod W).
  void window(int64_t start, int T, int32_t* inputs, int32_t* targets) const;

  // Number of whole batches of B windows before the stream wraps (at least 1).
  int64_t batches_per_epoch(int B, int T) const;

  // Data position for checkpoints: restoring it reproduces the following batches exactly.
  int64_t cursor() const { return cursor_; }
  void set_cursor(int64_t cursor);

 private:
  int64_t starts(int T) const;  // W = size - T, the number of valid window starts
  const TokenSplit& split_;
  int seq_len_;
  int64_t cursor_ = 0;
};

}  // namespace px
