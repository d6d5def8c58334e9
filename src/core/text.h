#pragma once
// Small text helpers shared by the settings and the error messages:
//  - comma-separated lists in settings and environment variables (lora.targets, eval.seq_lens,
//    TESSERA_GEMM_EPILOGUES): items split at every comma, blanks around each dropped;
//  - text from a user or a file shown on one line (run names, --set overrides, a `latest` file
//    of binary garbage): control characters escaped.
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

}  // namespace tessera
