// Strict recursive-descent JSON (RFC 8259), json.h.
#include "checkpoint/json.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace tessera {

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  Json document() {
    Json v = value(0);
    skip_ws();
    if (i_ != s_.size()) fail("unexpected '", s_[i_], "' after the value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;

  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    TESSERA_FAIL(what_, ": JSON error at byte ", i_, ": ", args...);
  }

  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }

  void expect_word(const char* w) {
    for (const char* c = w; *c; ++c, ++i_)
      if (i_ >= s_.size() || s_[i_] != *c) fail("expected '", w, "'");
  }

  Json value(int depth) {
    if (depth > kMaxDepth) fail("nested deeper than ", kMaxDepth, " levels");
    skip_ws();
    if (i_ >= s_.size()) fail("unexpected end of text");
    Json v;
    const char c = s_[i_];
    if (c == '{') {
      v.kind_ = Json::Kind::Object;
      ++i_;
      std::set<std::string> seen;
      skip_ws();
      if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
      while (true) {
        skip_ws();
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
        std::string key = string();
        if (!seen.insert(key).second) fail("duplicate key \"", key, "\"");
        skip_ws();
        if (i_ >= s_.size() || s_[i_] != ':') fail("expected ':' after key \"", key, "\"");
        ++i_;
        v.members_.emplace_back(std::move(key), value(depth + 1));
        skip_ws();
        if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
        if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
        fail("expected ',' or '}' in an object");
      }
    }
    if (c == '[') {
      v.kind_ = Json::Kind::Array;
      ++i_;
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
      while (true) {
        v.items_.push_back(value(depth + 1));
        skip_ws();
        if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
        if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
        fail("expected ',' or ']' in an array");
      }
    }
    if (c == '"') {
      v.kind_ = Json::Kind::String;
      v.text_ = string();
      return v;
    }
    if (c == 't' || c == 'f') {
      v.kind_ = Json::Kind::Bool;
      v.bool_ = c == 't';
      expect_word(v.bool_ ? "true" : "false");
      return v;
    }
    if (c == 'n') {
      expect_word("null");
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind_ = Json::Kind::Number;
      v.text_ = number();
      return v;
    }
    fail("unexpected '", c, "'");
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  std::string number() {
    const size_t start = i_;
    auto digits = [&] {
      const size_t d = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      if (i_ == d) fail("malformed number");
    };
    if (s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else {
      digits();
    }
    if (i_ < s_.size() && s_[i_] == '.') ++i_, digits();
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      digits();
    }
    return s_.substr(start, i_ - start);
  }

  unsigned hex4() {
    unsigned u = 0;
    for (int k = 0; k < 4; ++k, ++i_) {
      if (i_ >= s_.size()) fail("truncated \\u escape");
      const char h = s_[i_];
      u <<= 4;
      if (h >= '0' && h <= '9') u |= unsigned(h - '0');
      else if (h >= 'a' && h <= 'f') u |= unsigned(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') u |= unsigned(h - 'A' + 10);
      else fail("bad hex digit in a \\u escape");
    }
    return u;
  }

  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    ++i_;  // the opening quote
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') return ++i_, out;
      if (c < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += char(c), ++i_;
        continue;
      }
      if (++i_ >= s_.size()) fail("unterminated escape");
      const char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            if (i_ + 1 >= s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u')
              fail("unpaired surrogate");
            i_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail("unpaired surrogate");
          }
          put_utf8(out, cp);
          break;
        }
        default: --i_, fail("bad escape '\\", e, "'");
      }
    }
  }

  const std::string& s_;
  const std::string& what_;
  size_t i_ = 0;
};

Json parse_json(const std::string& text, const std::string& what) {
  return JsonParser(text, what).document();
}

const char* Json::kind_name() const {
  switch (kind_) {
    case Kind::Null: return "null";
    case Kind::Bool: return "a boolean";
    case Kind::Number: return "a number";
    case Kind::String: return "a string";
    case Kind::Array: return "an array";
    case Kind::Object: return "an object";
  }
  return "?";
}

bool Json::boolean(const std::string& key) const {
  TESSERA_CHECK(kind_ == Kind::Bool, key, ": expected true or false, got ", kind_name());
  return bool_;
}

int64_t Json::as_int(const std::string& key) const {
  TESSERA_CHECK(kind_ == Kind::Number, key, ": expected an integer, got ", kind_name());
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text_.c_str(), &end, 10);
  TESSERA_CHECK(errno == 0 && end == text_.c_str() + text_.size(), key,
                ": expected an integer that fits 64 bits, got ", text_);
  return int64_t(v);
}

double Json::as_double(const std::string& key) const {
  TESSERA_CHECK(kind_ == Kind::Number, key, ": expected a number, got ", kind_name());
  // strtod turns 1e999 into infinity and 1e-400 into 0, both with ERANGE: neither is the number
  // written, and no setting means either.
  errno = 0;
  const double v = std::strtod(text_.c_str(), nullptr);
  TESSERA_CHECK(errno == 0 && std::isfinite(v), key, ": ", text_,
                " is outside the range of a double (about 2.2e-308 to 1.8e308 in magnitude)");
  return v;
}

const std::string& Json::str(const std::string& key) const {
  TESSERA_CHECK(kind_ == Kind::String, key, ": expected a string, got ", kind_name());
  return text_;
}

const std::vector<Json>& Json::items(const std::string& key) const {
  TESSERA_CHECK(kind_ == Kind::Array, key, ": expected an array, got ", kind_name());
  return items_;
}

const std::vector<std::pair<std::string, Json>>& Json::members(const std::string& key) const {
  TESSERA_CHECK(kind_ == Kind::Object, key, ": expected an object, got ", kind_name());
  return members_;
}

const Json* Json::get(const std::string& key) const {
  for (const auto& [k, v] : members_)
    if (k == key) return &v;
  return nullptr;
}

const Json& Json::at(const std::string& key) const {
  const Json* v = get(key);
  TESSERA_CHECK(v, "missing key \"", key, "\"");
  return *v;
}

std::string read_json_file(const std::string& path) {
  TESSERA_CHECK(!std::filesystem::is_directory(path), "cannot read ", path, ": it is a directory");
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot read ", path, ": ", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  TESSERA_CHECK(!in.bad(), "error reading ", path);
  return text.str();
}

void for_each_json_line(const std::string& text, const std::string& path,
                        const std::function<void(const Json&, const std::string&)>& f) {
  size_t line = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    ++line;
    const std::string row = text.substr(begin, end - begin);
    begin = end + 1;
    if (row.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    const std::string where = path + " line " + std::to_string(line);
    f(parse_json(row, where), where);
  }
}

std::string json_exact(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          static const char* hex = "0123456789abcdef";
          out += "\\u00", out += hex[c >> 4], out += hex[c & 15];
        } else {
          out += char(c);
        }
    }
  }
  return out;
}

}  // namespace tessera
