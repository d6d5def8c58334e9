// Config refusals kept apart from test_config.cpp's table: YAML anchors and aliases, refused when
// a file is read (config.cpp; a few hundred bytes of nested aliases would otherwise make reading
// the config take exponential time), and a value refused outright reported alone, not with the
// rules that assume a valid one.
#include <gtest/gtest.h>

#include <string>

#include "config/config.h"
#include "config/expect_contains.h"
#include "test_util.h"

namespace tessera {
namespace {

using testing::error_of;
using testing::TempDir;

// An alias shares its node, so nested aliases ("billion laughs": 9 levels of 9 in 600 bytes stand
// for 9^9 scalars) would make every walk over the config exponentially long: refused when read.
TEST(ConfigAnchors, yaml_anchors_and_aliases_are_refused_naming_the_file_and_line) {
  std::string lol = "lol0: &l0 [a, a, a, a, a, a, a, a, a]\n";
  for (int i = 1; i < 10; ++i) {
    lol += "lol" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int j = 0; j < 9; ++j) lol += (j ? ", *l" : "*l") + std::to_string(i - 1);
    lol += "]\n";
  }
  TempDir tmp;
  const std::string laughs = tmp.write("lol.yaml", lol);
  EXPECT_CONTAINS(error_of([&] { load_config(laughs); }),
                  laughs + ": YAML anchors and aliases are not allowed in a config, found an " +
                      "anchor (&name) at line 1");
  const std::string alias = tmp.write("alias.yaml", "model:\n  n_layer: 4\n  n_head: *n\n");
  EXPECT_CONTAINS(error_of([&] { load_config(alias); }), alias + ": malformed YAML at line 3");
  const std::string both = tmp.write("both.yaml", "model:\n  n_layer: &n 4\n  n_head: *n\n");
  EXPECT_CONTAINS(error_of([&] { load_config(both); }),
                  both + ": YAML anchors and aliases are not allowed in a config, found an " +
                      "anchor (&name) at line 2");
  const std::string merge = tmp.write("merge.yaml", "base: &b {n_layer: 2}\nmodel:\n  <<: *b\n");
  EXPECT_CONTAINS(error_of([&] { load_config(merge); }),
                  "YAML anchors and aliases are not allowed");
}

// A negative lora.rank is named alone: the rules for adapters (a base, adamw) do not apply to it.
TEST(ConfigValidation, a_negative_lora_rank_is_reported_without_the_adapter_rules) {
  Config cfg;
  apply_override(cfg, "lora.rank=-1");
  const std::string e = error_of([&] { cfg.validate(); });
  EXPECT_CONTAINS(e, "lora.rank must be >= 0, got -1");
  EXPECT_EQ(e.find("checkpoint.init"), std::string::npos) << e;
}

}  // namespace
}  // namespace tessera
