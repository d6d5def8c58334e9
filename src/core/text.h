#pragma once
// Small text helpers shared by the settings and the error messages:
//  - comma-separated lists in settings and environment variables (lora.targets, eval.seq_lens,
//    TESSERA_GEMM_EPILOGUES): items split at every comma, blanks around each dropped;
//  - text from a user or a file shown on one line (run names, --set overrides, a `latest` file
//    of binary garbage): control characters escaped;
//  - the word a typo most likely meant (unknown config keys, unknown command-line flags).
#include <algorithm>
#include <string>
#include <string_view>
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

// A list key's items (lora.targets, lora.trainable): split_trimmed, except that a last comma ends
// the list ("q,v," is q and v). Empty items inside are kept, for the caller to refuse.
inline std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out = split_trimmed(text);
  if (!text.empty() && text.back() == ',') out.pop_back();
  return out;
}

constexpr const char* kHexDigits = "0123456789abcdef";

// Appends c as C and YAML's double-quoted strings write it: \n, \t, another control character as
// \xNN (both read it back); anything else as itself.
inline void append_escaped(std::string& out, unsigned char c) {
  if (c == '\n') {
    out += "\\n";
  } else if (c == '\t') {
    out += "\\t";
  } else if (c < 0x20 || c == 0x7f) {
    out += {'\\', 'x', kHexDigits[c >> 4], kHexDigits[c & 15]};
  } else {
    out += char(c);
  }
}

// s on one line for a message: control characters escaped (append_escaped), so a name holding a
// newline cannot forge a second line. With `ascii`, also '\' and every byte above 0x7e as \xNN
// (a file of binary garbage, unambiguous); cut after max_chars with "... (N bytes)".
inline std::string printable(std::string_view s, bool ascii = false,
                             size_t max_chars = std::string::npos) {
  std::string out;
  for (const char ch : s) {
    if (out.size() >= max_chars) return out + "... (" + std::to_string(s.size()) + " bytes)";
    const auto c = static_cast<unsigned char>(ch);
    if (ascii && (c == '\\' || c > 0x7e))
      out += {'\\', 'x', kHexDigits[c >> 4], kHexDigits[c & 15]};
    else
      append_escaped(out, c);
  }
  return out;
}

// Optimal string alignment distance: the fewest single-character insertions, deletions and
// substitutions, and swaps of two neighbours (a typo's "sede" for "seed" is one edit, not two).
inline size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> before(b.size() + 1), prev(b.size() + 1), row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      row[j] =
          std::min({prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        row[j] = std::min(row[j], before[j - 2] + 1);
    }
    std::swap(before, prev);
    std::swap(prev, row);
  }
  return prev[b.size()];
}

// The candidate a typo most likely meant: the nearest by edit distance when that is small for the
// word's length (n_layers -> n_layer), else one that is a prefix of it or it of one (optimizer ->
// optim, warmup -> warmup_steps); "" when nothing is close.
inline std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  const size_t limit = std::clamp<size_t>(word.size() / 3, 1, 3);
  std::string best;
  size_t best_d = limit + 1;
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) best = c, best_d = d;
  }
  if (!best.empty()) return best;
  for (const auto& c : candidates) {
    const std::string_view shorter = c.size() < word.size() ? std::string_view(c) : word;
    const std::string_view longer = c.size() < word.size() ? word : std::string_view(c);
    if (shorter.size() >= 3 && longer.substr(0, shorter.size()) == shorter) return c;
  }
  return "";
}

}  // namespace tessera
