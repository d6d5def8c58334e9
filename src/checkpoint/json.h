// A small strict JSON reader and the string escaping a writer needs: enough for safetensors headers
// and Hugging Face's config.json (RFC 8259; no comments, no trailing commas, no NaN).
//
//   Json j = parse_json(text, "model.safetensors header");   // errors name `what` and the offset
//   j.at("dtype").str();  j.at("shape").items();  j.get("__metadata__");  // null when absent
//   "\"" + json_escape(name) + "\""                          // a string for a JSON text
//
// Objects keep their keys in file order and may not repeat one (an error naming it). Numbers keep
// their text: as_int() accepts only integers that fit int64 exactly, as_double() any number within
// double's range (1e999 and 1e-400 are errors, not infinity and 0).
// Nesting deeper than 64 levels is an error, so hostile input cannot exhaust the stack.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind() const { return kind_; }
  bool is(Kind k) const { return kind_ == k; }
  const char* kind_name() const;  // "null", "a boolean", "a number", ...

  // Accessors: a wrong kind is an error naming `key_for_errors` (the caller's path to the value).
  bool boolean(const std::string& key_for_errors = "value") const;
  int64_t as_int(const std::string& key_for_errors = "value") const;
  double as_double(const std::string& key_for_errors = "value") const;
  const std::string& str(const std::string& key_for_errors = "value") const;
  const std::vector<Json>& items(const std::string& key_for_errors = "value") const;  // array
  const std::vector<std::pair<std::string, Json>>& members(
      const std::string& key_for_errors = "value") const;  // object, in file order

  // Object lookups: get() is null when absent (or when this is not an object); at() is an error
  // naming the key.
  const Json* get(const std::string& key) const;
  const Json& at(const std::string& key) const;

 private:
  friend class JsonParser;
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  std::string text_;  // a string's value, or a number's text
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

// Parses one JSON value filling all of text (whitespace around it allowed). `what` names the
// source in errors: "<what>: JSON error at byte <n>: <reason>".
Json parse_json(const std::string& text, const std::string& what);

// JSON Lines: each line of text that holds more than blanks parsed as one value and handed to
// f(value, where), where = "<path> line <n>" (numbered from 1, blank lines counted) for its errors.
void for_each_json_line(const std::string& text, const std::string& path,
                        const std::function<void(const Json&, const std::string&)>& f);

// A JSON (or JSON Lines) file's whole text; a missing, unreadable or directory path is an error
// naming it.
std::string read_json_file(const std::string& path);

// s with '"', '\\' and control characters escaped (\n, \t, \u00XX ...); UTF-8 passes through.
std::string json_escape(const std::string& s);

// v as the shortest JSON number text that reads back exactly; "null" for NaN and infinities
// (JSON has neither).
std::string json_exact(double v);

}  // namespace tessera
