// What the config's rule files share (internal to src/config): the list of broken rules each check
// appends to, and the checks that live outside validate.cpp (validate_tuning.cpp: LoRA and the
// training objective).
#pragma once

#include <algorithm>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"

namespace tessera::config_rules {

// Appends a sentence made of the streamed arguments.
class Problems {
 public:
  template <typename... Args>
  void add(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    list_.push_back(os.str());
  }

  template <typename T>
  void positive(const char* key, T value) {
    if (!(value > 0)) add(key, " must be positive, got ", value);
  }
  template <typename T>
  void non_negative(const char* key, T value) {
    if (!(value >= 0)) add(key, " must be >= 0, got ", value);
  }
  // Whether value is one of them (else the problem is added).
  bool one_of(const char* key, const std::string& value,
              std::initializer_list<const char*> allowed) {
    if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return true;
    std::string names;
    for (const char* a : allowed) names += std::string(names.empty() ? "" : ", ") + a;
    add(key, " must be one of ", names, "; got ", quoted(value));
    return false;
  }
  // A value as a message quotes it: at most 64 characters of it, then how long it was.
  static std::string quoted(const std::string& value) {
    // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) about "'" + value + "'".
    std::string out(1, '\'');
    out.append(value, 0, 64);
    if (value.size() <= 64) return out += '\'';
    out += "...' (";
    out += std::to_string(value.size());
    return out += " characters)";
  }
  void non_empty(const char* key, const std::string& value) {
    if (value.empty()) add(key, " must not be empty");
  }

  std::vector<std::string> take() { return std::move(list_); }

 private:
  std::vector<std::string> list_;
};

// Whether the head dimension is defined (reported by the model's checks otherwise).
bool head_dim_valid(const ModelConfig& m);

// validate_tuning.cpp: the lora section, and train.objective with what goes with dpo.
void check_lora(const Config& c, Problems& p);
void check_objective(const Config& c, Problems& p);

}  // namespace tessera::config_rules
