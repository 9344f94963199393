// data prepare, part 1: which files are read, and how their text becomes documents.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "data/prepare.hpp"
#include "util/errors.hpp"  // defines: UserError

namespace fs = std::filesystem;

namespace px {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool looks_binary(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char buf[4096];
  in.read(buf, sizeof buf);
  return std::find(buf, buf + in.gcount(), '\0') != buf + in.gcount();
}

// Files of one directory tree, sorted, with the skip rules of collect_text_files.
std::vector<std::string> walk(const fs::path& root) {
  std::vector<std::string> files;
  std::error_code ec;
  auto unreadable = [&] {
    return UserError(fmt::format("--input '{}': cannot be read ({})", root.string(), ec.message()));
  };
  fs::recursive_directory_iterator it(root, fs::directory_options::none, ec), end;
  if (ec) throw unreadable();
  for (; it != end; it.increment(ec)) {
    if (ec) throw unreadable();
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (!name.empty() && name[0] == '.') {  // hidden file or directory
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (ends_with(name, ".dat")) continue;                          // fortune index
    if (it->is_symlink() && ends_with(name, ".u8")) continue;     // fortune UTF-8 alias
    if (!it->is_regular_file()) continue;
    if (looks_binary(p)) {
      spdlog::warn("data prepare: skipping binary file {}", p.string());
      continue;
    }
    files.push_back(p.string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Cuts `text` at lines for which `is_cut(line)` holds; drops empty documents and trims
// newlines at both ends of each document.
template <class Pred>
void cut_lines(const std::string& text, Pred is_cut, std::vector<std::string>& docs) {
  std::string doc;
  auto flush = [&] {
    const size_t b = doc.find_first_not_of("\r\n");
    const size_t e = doc.find_last_not_of("\r\n");
    if (b != std::string::npos && doc.find_first_not_of(" \t\r\n\v\f") != std::string::npos) {
      docs.push_back(doc.substr(b, e - b + 1));
    }
    doc.clear();
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    const size_t stop = nl == std::string::npos ? text.size() : nl + 1;
    std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
    if (is_cut(line)) flush();
    else doc.append(text, pos, stop - pos);
    pos = stop;
  }
  flush();
}

}  // namespace

std::vector<std::string> collect_text_files(const std::vector<std::string>& inputs) {
  if (inputs.empty()) {
    throw UserError("--input: no input given (pass one or more text files or directories)");
  }
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    const auto st = fs::status(in, ec);
    if (ec || !fs::exists(st)) {
      throw UserError(fmt::format("--input '{}': no such file or directory", in));
    }
    if (fs::is_directory(st)) {
      auto more = walk(in);
      if (more.empty()) spdlog::warn("data prepare: no text files under {}", in);
      files.insert(files.end(), more.begin(), more.end());
    } else {
      if (looks_binary(in)) {
        throw UserError(fmt::format(
            "--input '{}': looks binary (NUL byte in its first 4 KB); only text is allowed", in));
      }
      files.push_back(in);
    }
  }
  return files;
}

std::vector<std::string> split_documents(const std::vector<std::string>& file_texts) {
  std::vector<std::string> docs;
  for (const auto& t : file_texts) {
    cut_lines(t, [](std::string_view l) { return l == "%" || l == "%\r"; }, docs);
  }
  if (docs.size() >= 20) return docs;
  docs.clear();
  for (const auto& t : file_texts) {
    cut_lines(t, [](std::string_view l) {
      return l.find_first_not_of(" \t\r\v\f") == std::string_view::npos || l == "%";
    }, docs);
  }
  return docs;
}

bool is_validation_document(size_t index, size_t n_documents) {
  if (n_documents < 2) return false;
  if (n_documents < 20) return index + 1 == n_documents;
  return index % 20 == 19;
}

}  // namespace px
