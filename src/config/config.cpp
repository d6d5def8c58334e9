// Reading and writing configs. YAML is parsed by yaml-cpp, but every scalar is converted here by
// one set of strict parsers, so a file and a --set override accept exactly the same spellings and
// fail with the same message. Nothing is silently ignored: unknown keys, duplicate keys, values of
// the wrong type and extra YAML documents are all errors naming the file, key path and line.
#include "config/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>
#include <type_traits>

#include "config/schema.h"
#include "core/error.h"
#include "core/text.h"

namespace tessera {

namespace {

using config_schema::for_each_field;
using config_schema::for_each_section;

// ---- scalars ------------------------------------------------------------------------------------

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// from_chars rejects a leading '+', which YAML and people both write.
std::string_view skip_plus(std::string_view s) {
  return s.size() > 1 && s[0] == '+' && s[1] != '-' ? s.substr(1) : s;
}

bool parse_value(std::string_view text, int64_t& out) {
  const std::string_view s = skip_plus(trim(text));
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return false;
  out = v;
  return true;
}

bool parse_value(std::string_view text, double& out) {
  const std::string_view s = skip_plus(trim(text));
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  // from_chars also reads "inf" and "nan"; no setting is meaningful at either.
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
    return false;
  }
  out = v;
  return true;
}

bool parse_value(std::string_view text, bool& out) {
  std::string s(trim(text));
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  // YAML 1.1's spellings, which yaml-cpp and PyYAML also accept.
  const bool yes = s == "true" || s == "yes" || s == "on";
  const bool no = s == "false" || s == "no" || s == "off";
  if (yes || no) out = yes;
  return yes || no;
}

bool parse_value(std::string_view text, std::string& out) {
  out = std::string(text);
  return true;
}

const char* type_name(const int64_t&) { return "an integer"; }
const char* type_name(const double&) { return "a number"; }
const char* type_name(const bool&) { return "a boolean (true or false)"; }
const char* type_name(const std::string&) { return "a string"; }

// ---- key lookup and suggestions -----------------------------------------------------------------

// A Config to walk read-only when only the key names matter.
const Config& defaults() {
  static const Config d;
  return d;
}

std::vector<std::string> section_names() {
  std::vector<std::string> names;
  for_each_section(defaults(), [&](const char* section, const auto&) { names.push_back(section); });
  return names;
}

std::vector<std::string> keys_of(std::string_view section) {
  std::vector<std::string> keys;
  for_each_field(defaults(), [&](const char* s, const char* key, const auto&) {
    if (s == section) keys.push_back(key);
  });
  return keys;
}

bool is_section(std::string_view name) {
  const auto names = section_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

// " (did you mean 'model.n_layer'?)" for an unknown `section.key` (key "" for a top-level key).
std::string suggestion(std::string_view section, std::string_view key) {
  std::string guess;
  if (is_section(section)) {
    const std::string k = closest(key, keys_of(section));
    if (!k.empty()) guess = std::string(section) + "." + k;
  } else {
    const std::string s = closest(section, section_names());
    // A known key in a misspelt section (optimizer.lr), or a section typo alone at the top level.
    if (!s.empty() && (key.empty() || !closest(key, keys_of(s)).empty())) {
      guess = key.empty() ? s : s + "." + closest(key, keys_of(s));
    }
  }
  if (guess.empty()) {
    // The right key in the wrong place: model.lr or a top-level n_layer.
    const std::string_view leaf = key.empty() ? section : key;
    for (const auto& s : section_names()) {
      const auto keys = keys_of(s);
      if (std::find(keys.begin(), keys.end(), leaf) != keys.end()) {
        guess = s + "." + std::string(leaf);
        break;
      }
    }
  }
  return guess.empty() ? "" : " (did you mean '" + guess + "'?)";
}

// Calls f(field&) on section.key of cfg; false when there is no such key.
template <typename F>
bool with_field(Config& cfg, std::string_view section, std::string_view key, F&& f) {
  bool found = false;
  for_each_field(cfg, [&](const char* s, const char* k, auto& value) {
    if (!found && s == section && k == key) {
      found = true;
      f(value);
    }
  });
  return found;
}

// ---- YAML ---------------------------------------------------------------------------------------

std::string at(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return "";
  return " (line " + std::to_string(m.line + 1) + ")";
}

const char* kind_of(const YAML::Node& node) {
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  if (node.IsNull()) return "nothing";
  return "a scalar";
}

template <typename T>
void assign_from_yaml(T& field, const YAML::Node& value, const std::string& source,
                      const std::string& path, const std::string& loc) {
  if (!value.IsScalar()) {
    // An empty value is null in YAML, not "": say how to write the empty string.
    const char* hint =
        std::is_same_v<T, std::string> && value.IsNull() ? " (write \"\" for an empty string)" : "";
    TESSERA_FAIL(source, ": ", path, ": expected ", type_name(field), ", got ", kind_of(value),
                 hint, loc);
  }
  if (!parse_value(value.Scalar(), field)) {
    TESSERA_FAIL(source, ": ", path, ": expected ", type_name(field), ", got '", value.Scalar(),
                 "'", loc);
  }
}

std::string key_text(const YAML::Node& key, const std::string& source, const std::string& parent) {
  if (!key.IsScalar()) {
    TESSERA_FAIL(source, ": ", parent.empty() ? "top level" : parent,
                 ": keys must be plain names, got ", kind_of(key), at(key));
  }
  return key.Scalar();
}

// True when some key of section starts with "<group>.": a nested mapping such as
// model.rope_scaling, whose keys the schema lists as "rope_scaling.type", ...
bool is_group(std::string_view section, const std::string& group) {
  for (const auto& k : keys_of(section))
    if (k.size() > group.size() && k.compare(0, group.size(), group) == 0 && k[group.size()] == '.')
      return true;
  return false;
}

// The keys of body, a mapping under section (group: the nested mapping's name, "" at the top).
// `seen` holds the section's keys read so far, dotted ("rope_scaling.type"): a nested mapping and
// a dotted key name the same key, and whichever came last would win.
void read_section(Config& cfg, const std::string& section, const YAML::Node& body,
                  const std::string& source, std::set<std::string>& seen,
                  const std::string& group = "") {
  const std::string where = group.empty() ? section : section + "." + group;
  if (body.IsNull()) return;  // "model:" with nothing under it keeps the defaults
  if (!body.IsMap()) {
    TESSERA_FAIL(source, ": ", where, ": expected a mapping of keys, got ", kind_of(body),
                 body.IsScalar() ? " '" + body.Scalar() + "'" : "", at(body));
  }
  for (auto it = body.begin(); it != body.end(); ++it) {
    const std::string key = (group.empty() ? "" : group + ".") + key_text(it->first, source, where);
    const std::string path = section + "." + key;
    // yaml-cpp keeps both entries of a repeated key; which one wins would be an accident.
    TESSERA_CHECK(seen.insert(key).second, source, ": duplicate key '", path, "'", at(it->first));
    if (group.empty() && is_group(section, key)) {
      read_section(cfg, section, it->second, source, seen, key);
      continue;
    }
    const bool known = with_field(cfg, section, key, [&](auto& field) {
      // The key's line: yaml-cpp marks an empty value at the line after it.
      assign_from_yaml(field, it->second, source, path, at(it->first));
    });
    if (!known) {
      TESSERA_FAIL(source, ": unknown key '", path, "'", suggestion(section, key), at(it->first));
    }
  }
}

// yaml-cpp reads a quoted scalar whose closing quote is missing to the end of the file, as if it
// were closed there (the last line break becoming a space): `dir: "/tmp/x` would give "/tmp/x ".
// So every quoted scalar must be closed in the text. yaml-cpp tags plain scalars "?"; a node's mark
// is the offset of its first character (an anchor or tag before the quote), not counting a BOM.
void check_quotes_closed(const YAML::Node& node, std::string_view text, const std::string& source) {
  if (node.IsMap() || node.IsSequence()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (node.IsMap()) {
        check_quotes_closed(it->first, text, source);
        check_quotes_closed(it->second, text, source);
      } else {
        check_quotes_closed(*it, text, source);
      }
    }
    return;
  }
  const YAML::Mark m = node.Mark();
  if (!node.IsScalar() || node.Tag() == "?" || m.is_null() || m.pos < 0) return;
  size_t i = size_t(m.pos);
  auto blank = [&](size_t k) { return k < text.size() && std::isspace((unsigned char)text[k]); };
  while (i < text.size() && (text[i] == '&' || text[i] == '!')) {  // the anchor, the tag
    while (i < text.size() && !blank(i)) ++i;
    while (blank(i)) ++i;
  }
  if (i >= text.size() || (text[i] != '"' && text[i] != '\'')) return;  // a block scalar
  const char q = text[i];
  for (++i; i < text.size(); ++i) {
    if (q == '"' && text[i] == '\\') {
      ++i;  // an escape: \" is no closing quote
    } else if (text[i] == q) {
      if (q == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
        ++i;  // '' is a quote inside a single-quoted scalar
      } else {
        return;
      }
    }
  }
  TESSERA_FAIL(source, ": malformed YAML at line ", m.line + 1, ", column ", m.column + 1,
               ": the value quoted with ", q, " here has no closing ", q);
}

[[noreturn]] void fail_malformed(const std::string& source, const YAML::Exception& e) {
  TESSERA_FAIL(source, ": malformed YAML at line ", e.mark.line + 1, ", column ", e.mark.column + 1,
               ": ", e.msg);
}

// YAML anchors and aliases (&name, *name) are refused: no tessera config needs them, and an alias
// shares its node, so a few hundred bytes of nested aliases ("billion laughs") stand for a tree of
// billions of nodes that any walk over the config (the key checks, check_quotes_closed) would visit
// one by one. yaml-cpp (0.7) reports an anchor by OnAnchor before the event of the node that
// carries it, and an alias as its own event; the anchor ids the node events carry add nothing.
class AnchorFinder : public YAML::EventHandler {
 public:
  explicit AnchorFinder(const std::string& source) : source_(source) {}
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { refuse(m, "an alias (*name)"); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
  void OnAnchor(const YAML::Mark& m, const std::string&) override {
    refuse(m, "an anchor (&name)");
  }

 private:
  [[noreturn]] void refuse(const YAML::Mark& m, const char* what) {
    TESSERA_FAIL(source_, ": YAML anchors and aliases are not allowed in a config, found ", what,
                 " at line ", m.line + 1, ", column ", m.column + 1, "; write the value out");
  }
  const std::string& source_;
};

// Runs after YAML::LoadAll has read the same text, so its parse errors have been reported there.
void refuse_anchors(const std::string& text, const std::string& source) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  AnchorFinder finder(source);
  try {
    while (parser.HandleNextDocument(finder)) {
    }
  } catch (const YAML::Exception& e) {
    fail_malformed(source, e);
  }
}

void read_yaml(Config& cfg, const std::string& text, const std::string& source) {
  // yaml-cpp stops reading at a NUL (a binary file would be judged by its first bytes).
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    TESSERA_FAIL(source, ": holds a NUL byte (line ",
                 std::count(text.begin(), text.begin() + ptrdiff_t(nul), '\n') + 1,
                 "): not a YAML text file");
  }
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    fail_malformed(source, e);
  }
  TESSERA_CHECK(docs.size() <= 1, source, ": holds ", docs.size(),
                " YAML documents ('---'); a config is one");
  refuse_anchors(text, source);
  if (docs.empty() || docs[0].IsNull()) return;  // an empty file: all defaults
  const YAML::Node& root = docs[0];
  const std::string_view bom = "\xef\xbb\xbf";
  check_quotes_closed(root, std::string_view(text).substr(text.starts_with(bom) ? bom.size() : 0),
                      source);
  if (!root.IsMap()) {
    TESSERA_FAIL(source, ": expected a mapping of sections (model:, data:, ...) at the top, got ",
                 kind_of(root), at(root));
  }
  std::set<std::string> seen;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string section = key_text(it->first, source, "");
    TESSERA_CHECK(seen.insert(section).second, source, ": duplicate section '", section, "'",
                  at(it->first));
    if (!is_section(section)) {
      TESSERA_FAIL(source, ": unknown key '", section, "'", suggestion(section, ""), at(it->first));
    }
    std::set<std::string> keys;
    read_section(cfg, section, it->second, source, keys);
  }
}

// Shortest text that reads back to the same double, spelt so YAML readers see a float (PyYAML's
// YAML 1.1 resolver wants a '.' before the exponent: 1.0e-05, not 1e-05).
std::string format_double(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, end);
  if (s.find_first_of(".ni") != std::string::npos) return s;  // has a point, or inf/nan
  const size_t e = s.find('e');
  if (e == std::string::npos) return s + ".0";
  return s.insert(e, ".0");
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    append_escaped(out, c);
  }
  return out + "\"";
}

std::string format_value(int64_t v) { return std::to_string(v); }
std::string format_value(double v) { return format_double(v); }
std::string format_value(bool v) { return v ? "true" : "false"; }
// Names and paths (rmsnorm, data/kjv/byte/train_*.bin) are written plain for the reader; anything
// a YAML reader could take for another type or for syntax is quoted.
bool plain_safe(const std::string& s) {
  if (s.empty() || !(std::isalpha((unsigned char)s[0]) || s[0] == '_')) return false;
  for (unsigned char c : s) {
    if (!(std::isalnum(c) || std::string_view("_-./*").find(char(c)) != std::string_view::npos)) {
      return false;
    }
  }
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}) {
    if (lower == word) return false;
  }
  return true;
}

std::string format_value(const std::string& v) { return plain_safe(v) ? v : quote(v); }

Config parse_unvalidated(const std::string& text, const std::string& source,
                         const std::vector<std::string>& overrides) {
  Config cfg;
  read_yaml(cfg, text, source);
  for (const auto& o : overrides) apply_override(cfg, o);
  return cfg;
}

// Validates, naming where the config came from in front of validate()'s list of problems.
void check_valid(const Config& cfg, const std::string& source,
                 const std::vector<std::string>& overrides) {
  try {
    cfg.validate();
  } catch (const Error& e) {
    std::string where = source;
    if (!overrides.empty()) {
      where += " with overrides";
      for (const auto& o : overrides) where += " '" + printable(o) + "'";
    }
    throw Error(where + ": " + e.what());
  }
}

}  // namespace

// ---- public -------------------------------------------------------------------------------------

void apply_override(Config& cfg, const std::string& assignment) {
  const std::string source = "override '" + assignment + "'";
  const size_t eq = assignment.find('=');
  TESSERA_CHECK(eq != std::string::npos, source, ": expected section.key=value");
  const std::string path(trim(std::string_view(assignment).substr(0, eq)));
  // Trimmed as a YAML plain scalar is (YAML's quotes keep blanks a value really needs).
  const std::string value(trim(std::string_view(assignment).substr(eq + 1)));
  const size_t dot = path.find('.');
  const std::string section = path.substr(0, dot);
  const std::string key = dot == std::string::npos ? "" : path.substr(dot + 1);
  if (dot == std::string::npos && is_section(section)) {
    TESSERA_FAIL(source, ": '", section, "' is a section; set one of its keys, e.g. '", section,
                 ".", keys_of(section).front(), "=...'");
  }
  const bool known =
      dot != std::string::npos && with_field(cfg, section, key, [&](auto& field) {
        if (!parse_value(value, field)) {
          TESSERA_FAIL(source, ": ", path, ": expected ", type_name(field), ", got '", value, "'");
        }
      });
  if (!known) TESSERA_FAIL(source, ": unknown key '", path, "'", suggestion(section, key));
}

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Config cfg = parse_unvalidated(yaml_text, source, overrides);
  check_valid(cfg, source, overrides);
  return cfg;
}

Config parse_stored_config(const std::string& yaml_text, const std::string& source) {
  Config cfg = parse_unvalidated(yaml_text, source, {});
  validate_model(cfg.model, source);
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  TESSERA_CHECK(fs::exists(st), path, ": no such config file");
  TESSERA_CHECK(!fs::is_directory(st), path, ": is a directory, not a config file");
  // A pipe is a file too (--config <(...)); a device such as /dev/zero would be read forever.
  TESSERA_CHECK(fs::is_regular_file(st) || fs::is_fifo(st), path,
                ": is not a regular file (a device or socket), not a config file");
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, path, ": cannot open config file");
  // Configs are a few KiB; a larger file is something else, and is not read whole.
  constexpr size_t kMaxBytes = size_t(1) << 20;
  std::string text(kMaxBytes + 1, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  TESSERA_CHECK(!in.bad(), path, ": error reading config file");
  text.resize(size_t(in.gcount()));
  TESSERA_CHECK(text.size() <= kMaxBytes, path, ": is larger than ", kMaxBytes >> 20,
                " MiB, not a config file");

  Config cfg = parse_unvalidated(text, path, overrides);
  // Runs are named after their config unless told otherwise: configs/tiny.yaml -> checkpoints/tiny.
  if (cfg.train.run_name.empty()) cfg.train.run_name = fs::path(path).stem().string();
  check_valid(cfg, path, overrides);
  return cfg;
}

std::string to_yaml(const Config& cfg) {
  std::string out;
  std::string current;
  for_each_field(cfg, [&](const char* section, const char* key, const auto& value) {
    if (current != section) {
      if (!current.empty()) out += "\n";
      out += std::string(section) + ":\n";
      current = section;
    }
    out += "  " + std::string(key) + ": " + format_value(value) + "\n";
  });
  return out;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for_each_field(defaults(), [&](const char* section, const char* key, const auto&) {
    keys.push_back(std::string(section) + "." + key);
  });
  return keys;
}

}  // namespace tessera
