// EXPECT_CONTAINS(text, part) for the config tests: on failure prints both, so a wrong message is
// easy to read.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace tessera::testing {

inline ::testing::AssertionResult contains(const char*, const char*, const std::string& text,
                                           const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected the text to contain\n  " << part << "\nbut it is\n  " << text;
}

}  // namespace tessera::testing

#define EXPECT_CONTAINS(text, part) EXPECT_PRED_FORMAT2(::tessera::testing::contains, text, part)
