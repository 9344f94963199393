// data prepare, part 2: read, split train/val, learn BPE on train, write the three files.
#include "data/prepare.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/bpe_tokenizer.hpp"  // defines: BpeTokenizer
#include "data/token_shards.hpp"   // defines: write_token_shard
#include "util/errors.hpp"         // defines: UserError

namespace fs = std::filesystem;

namespace px {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  if (in) ss << in.rdbuf();
  if (!in || in.bad()) throw UserError(fmt::format("--input '{}': cannot be read", path));
  return ss.str();
}

// Documents followed by the separator "\n\n" (byte id 10 twice), tokenized.
std::vector<int32_t> tokenize(const BpeTokenizer& tok, const std::vector<std::string>& docs) {
  std::vector<int32_t> out;
  for (const auto& d : docs) {
    const auto ids = tok.encode(d);
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back('\n');
    out.push_back('\n');
  }
  return out;
}

int64_t text_bytes(const std::vector<std::string>& docs) {
  int64_t n = 0;
  for (const auto& d : docs) n += static_cast<int64_t>(d.size()) + 2;
  return n;
}

// A lone document is cut in two at the line break nearest 95% of its length (or at 95% of
// its bytes), so that both splits are non-empty.
void cut_single_document(std::vector<std::string>& train, std::vector<std::string>& val) {
  const std::string doc = train.front();
  if (doc.size() < 2) {
    spdlog::warn("data prepare: a single {}-byte document; validation repeats it", doc.size());
    val = train;
    return;
  }
  size_t cut = doc.size() * 95 / 100;
  const size_t nl = doc.rfind('\n', cut);
  if (nl != std::string::npos && nl > 0) cut = nl + 1;
  cut = std::clamp<size_t>(cut, 1, doc.size() - 1);
  train = {doc.substr(0, cut)};
  val = {doc.substr(cut)};
}

}  // namespace

PrepareSummary data_prepare(const std::vector<std::string>& inputs, const std::string& out_dir,
                            int vocab) {
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  if (vocab < 256) {
    throw UserError(fmt::format(
        "--vocab {}: a byte-level BPE vocabulary needs at least 256 ids (the raw bytes)", vocab));
  }
  const auto files = collect_text_files(inputs);
  PrepareSummary sum;
  std::vector<std::string> texts;
  for (const auto& f : files) {
    texts.push_back(read_text(f));
    sum.bytes += static_cast<int64_t>(texts.back().size());
  }
  spdlog::info("data prepare: read {} files, {} bytes ({:.1f} s)", files.size(), sum.bytes,
               elapsed());

  auto docs = split_documents(texts);
  texts.clear();
  if (docs.empty()) {
    throw UserError(fmt::format("--input: the {} input file(s) hold no text ({} bytes)",
                                files.size(), sum.bytes));
  }
  std::vector<std::string> train, val;
  for (size_t i = 0; i < docs.size(); ++i) {
    (is_validation_document(i, docs.size()) ? val : train).push_back(std::move(docs[i]));
  }
  if (val.empty()) cut_single_document(train, val);
  sum.documents = static_cast<int64_t>(train.size() + val.size());
  spdlog::info("data prepare: {} documents ({} train, {} val)", sum.documents, train.size(),
               val.size());

  std::string corpus;
  corpus.reserve(text_bytes(train));
  for (const auto& d : train) corpus.append(d).append("\n\n");
  const auto tok = BpeTokenizer::train(corpus, vocab, [&](int merges, int64_t count) {
    spdlog::info("data prepare: BPE {} merges (last pair seen {} times) ({:.1f} s)", merges, count,
                 elapsed());
  });
  corpus.clear();
  corpus.shrink_to_fit();
  if (tok.vocab_size() < vocab) {
    spdlog::warn("data prepare: only {} merges possible; tokenizer vocab is {} (asked {})",
                 tok.vocab_size() - 256, tok.vocab_size(), vocab);
  }
  sum.vocab_size = tok.vocab_size();

  const auto train_ids = tokenize(tok, train);
  const auto val_ids = tokenize(tok, val);
  sum.train_tokens = static_cast<int64_t>(train_ids.size());
  sum.val_tokens = static_cast<int64_t>(val_ids.size());
  spdlog::info("data prepare: train {} tokens ({:.2f} bytes/token), val {} tokens ({:.2f} "
               "bytes/token) ({:.1f} s)",
               sum.train_tokens, double(text_bytes(train)) / sum.train_tokens, sum.val_tokens,
               double(text_bytes(val)) / sum.val_tokens, elapsed());

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec || !fs::is_directory(out_dir)) {
    throw UserError(fmt::format("--out '{}': cannot create the directory ({})", out_dir,
                                ec ? ec.message() : "a file of that name exists"));
  }
  const fs::path dir(out_dir);
  tok.save((dir / "tokenizer.h5").string());
  write_token_shard((dir / "train.h5").string(), train_ids, tok.vocab_size());
  write_token_shard((dir / "val.h5").string(), val_ids, tok.vocab_size());
  sum.seconds = elapsed();
  spdlog::info("data prepare: wrote {}/{{tokenizer,train,val}}.h5, vocab {} ({:.1f} s)", out_dir,
               tok.vocab_size(), sum.seconds);
  return sum;
}

}  // namespace px
