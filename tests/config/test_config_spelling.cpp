// How a config's values and keys may be spelt: the scalar spellings a file and a --set override
// both accept (and the near misses they refuse), and the guess an unknown key gets.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/config.h"
#include "config/expect_contains.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;

Config set(const std::string& assignment) {
  Config cfg;
  apply_override(cfg, assignment);
  return cfg;
}

TEST(ConfigSpelling, a_leading_plus_is_read_and_nothing_else_around_a_number) {
  EXPECT_EQ(set("train.max_steps=+5").train.max_steps, 5);
  EXPECT_EQ(set("optim.lr=+0.5").optim.lr, 0.5);
  EXPECT_EQ(set("optim.lr=-0").optim.lr, 0);
  for (const char* bad : {"train.max_steps=+-5", "train.max_steps=+", "train.max_steps=5x",
                          "train.max_steps=", "optim.lr=+-0.5", "optim.lr=+", "optim.lr=0.5x",
                          "optim.lr=1e999", "optim.lr=inf", "optim.lr=nan", "optim.lr="})
    EXPECT_CONTAINS(error_of([&] { set(bad); }),
                    bad[0] == 't' ? ": expected an integer, got '" : ": expected a number, got '");
}

TEST(ConfigSpelling, booleans_take_yaml_1_1_spellings_in_any_case) {
  for (const char* yes : {"true", "True", "YES", "on", "On"})
    EXPECT_TRUE(set(std::string("model.attend_current=") + yes).model.attend_current) << yes;
  for (const char* no : {"false", "FALSE", "no", "No", "off", "OFF"})
    EXPECT_FALSE(set(std::string("model.bias=") + no).model.bias) << no;
  EXPECT_CONTAINS(error_of([] { set("model.bias=1"); }),
                  "model.bias: expected a boolean (true or false), got '1'");
}

// An empty value is YAML's null: a string key says how to write "", a number key does not.
TEST(ConfigSpelling, an_empty_value_hints_at_quotes_for_strings_only) {
  const std::string number = error_of([] { parse_config("model:\n  n_layer:\n", "c.yaml"); });
  EXPECT_CONTAINS(number, "c.yaml: model.n_layer: expected an integer, got nothing");
  EXPECT_EQ(number.find("write \"\""), std::string::npos) << number;
  EXPECT_CONTAINS(error_of([] { parse_config("data:\n  train:\n", "c.yaml"); }),
                  "data.train: expected a string, got nothing (write \"\" for an empty string)");
}

// The guess: the nearest key within a third of the word's length in edits (1 to 3), else a key
// the word begins with or that begins with it (3 characters at least), else the same key in
// another section (the first in section order).
TEST(ConfigSpelling, an_unknown_key_gets_the_nearest_guess) {
  struct Case {
    const char* assignment;
    const char* guess;  // "" for none
  };
  for (const Case& c : {
           Case{"model.n_lxxer=1", "model.n_layer"},        // 2 edits in 7 letters: the limit
           Case{"model.n_layre=1", "model.n_layer"},        // two neighbours swapped: 1 edit
           Case{"eval.setps=1", "eval.steps"},              // so also in a short word
           Case{"model.xocab_size=1", "model.vocab_size"},  // the first letter
           Case{"model.vocab_sizx=1", "model.vocab_size"},  // the last letter
           Case{"model.vocab_sze=1", "model.vocab_size"},   // one left out
           Case{"model.n_embdd=1", "model.n_embd"},         // one added at the end
           Case{"model.zzzzout=1", ""},                     // 3 edits from dropout: too far
           Case{"model.n_lxzqr=1", ""},                     // 3 edits in 7 letters
           Case{"model.n_layqqq=1", ""},                    // the third edit is the last letter
           Case{"model.qqq=1", ""},                         // short words: 1 edit at most
           Case{"model.q=1", ""}, Case{"optimizer.lrr=1", "optim.lr"},  // both misspelt
           Case{"optimizer.lr=1", "optim.lr"},
           Case{"qqqqqqq.lr=1", "optim.lr"},           // the key alone is known
           Case{"model.interval=1", "eval.interval"},  // in eval, checkpoint and log
       }) {
    const std::string msg = error_of([&] { set(c.assignment); });
    const std::string guess = std::string(" (did you mean '") + c.guess + "'?)";
    if (*c.guess)
      EXPECT_CONTAINS(msg, guess);
    else
      EXPECT_EQ(msg.find("did you mean"), std::string::npos) << c.assignment << ": " << msg;
  }
  // A section that begins a longer word: "log" (3 letters) for "logging".
  EXPECT_CONTAINS(error_of([] { parse_config("logging:\n  interval: 5\n", "c.yaml"); }),
                  "(did you mean 'log'?)");
}

}  // namespace
}  // namespace tessera
