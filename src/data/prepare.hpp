#pragma once
// `parallax data prepare` (DESIGN §8): read text inputs, split them into documents, learn a
// byte-level BPE on the training documents, and write DIR/tokenizer.h5, DIR/train.h5 and
// DIR/val.h5.
#include <cstdint>
#include <string>
#include <vector>

namespace px {

// Regular text files under `inputs` (files, or directories walked recursively in sorted
// order). Directory walks skip hidden entries, fortune index files (*.dat), symlinks named
// *.u8, and files with a NUL byte in their first 4 KB. Throws UserError when `inputs` is
// empty, an input does not exist, or an explicitly named file is binary.
std::vector<std::string> collect_text_files(const std::vector<std::string>& inputs);

// Documents of a set of file texts: each file is cut at lines that are exactly "%" (fortune
// files); if that gives fewer than 20 documents in all, each file is cut at blank lines
// instead. Empty (whitespace-only) documents are dropped.
std::vector<std::string> split_documents(const std::vector<std::string>& file_texts);

// Indices of the validation documents: every 20th (index % 20 == 19); with fewer than 20
// documents the last one; with a single document none (the caller cuts it in two).
bool is_validation_document(size_t index, size_t n_documents);

// What data_prepare wrote, for logging and tests.
struct PrepareSummary {
  int64_t bytes = 0;            // text bytes read
  int64_t documents = 0;        // train + val documents
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
  int vocab_size = 0;           // tokenizer vocabulary (<= the requested vocab)
  double seconds = 0;
};

// Runs the whole preparation; `out_dir` is created if needed, and each file is written
// under a temporary name and renamed when complete. Throws UserError for no inputs, a
// missing or unreadable input (named), empty total text, or vocab < 256 (--vocab).
PrepareSummary data_prepare(const std::vector<std::string>& inputs, const std::string& out_dir,
                            int vocab);

}  // namespace px
