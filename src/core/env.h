#pragma once
// An environment variable that switches something on: unset, empty or `off` is false, `on` is
// true, anything else an error naming the variable and both values (TESSERA_ZERO_GRAD,
// TESSERA_UNFUSED). Read at each call, so a test may change it.
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace tessera {

inline bool env_switch(const char* var, const char* off, const char* on) {
  const char* e = std::getenv(var);
  if (!e || !*e || std::strcmp(e, off) == 0) return false;
  TESSERA_CHECK(std::strcmp(e, on) == 0, var, "='", e, "': expected ", off, " (the default) or ",
                on);
  return true;
}

}  // namespace tessera
