// Small helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace tessera::testing {

// Runs f, expects a tessera::Error, and returns its message ("" and a test failure when none was
// thrown), so a test can check that the message names the shapes, keys or values involved.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a tessera::Error";
  return "";
}

}  // namespace tessera::testing
