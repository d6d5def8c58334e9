#pragma once
// Comma-separated lists in settings and environment variables (lora.targets, eval.seq_lens,
// TESSERA_GEMM_EPILOGUES): items split at every comma, blanks around each dropped.
#include <algorithm>
#include <string>
#include <vector>

namespace tessera {

inline std::string trim(std::string s) {
  s.erase(0, s.find_first_not_of(" \t"));
  s.erase(s.find_last_not_of(" \t") + 1);
  return s;
}

// Every item, empty ones too ("a,,b," has four); none for "".
inline std::vector<std::string> split_trimmed(const std::string& text) {
  std::vector<std::string> items;
  for (size_t at = 0; !text.empty() && at <= text.size();) {
    const size_t end = std::min(text.find(',', at), text.size());
    items.push_back(trim(text.substr(at, end - at)));
    at = end + 1;
  }
  return items;
}

}  // namespace tessera
