// Small helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

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

// A tensor's values as doubles, whatever its floating dtype.
inline std::vector<double> values(const Tensor& t) {
  return t.to(DType::F64).to_vector<double>();
}

// The raw bytes of a tensor: "bit-identical" compares these.
inline std::vector<unsigned char> bytes(const Tensor& t) {
  Tensor c = t.contiguous();
  std::vector<unsigned char> out(c.nbytes());
  std::memcpy(out.data(), c.data_ptr(), out.size());
  return out;
}

}  // namespace tessera::testing
