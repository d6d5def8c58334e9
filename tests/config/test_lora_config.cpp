// The lora section's lists and rank as validation reads them: a list passes validation exactly when
// peft parses it (a run never fails at start on a list its config check let through), and a rank
// is held to the smallest projection it adapts, named in the refusal.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "peft/lora.h"

namespace tessera {
namespace {

Config lora_config(const std::string& overrides) {
  Config cfg;
  for (const char* o : {"lora.rank=8", "checkpoint.init=x", "model.mlp=swiglu",
                        "model.tie_embeddings=false"})
    apply_override(cfg, o);
  std::stringstream in(overrides);
  for (std::string o; std::getline(in, o, ';');) apply_override(cfg, o);
  return cfg;
}

bool parses(void (*parse)(const std::string&), const std::string& text) {
  try {
    parse(text);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

TEST(LoraConfig, a_list_passes_validation_exactly_when_peft_parses_it) {
  auto targets = [](const std::string& t) { peft::parse_targets(t); };
  for (const std::string text : {"q", "q,v,", " q , v", "all,head", "q,,v", ",", "", "u p",
                                 "q,v, ", "qv"}) {
    const Config cfg = lora_config("lora.targets=" + text);  // the value trimmed, as YAML's is
    const std::vector<std::string> problems = config_problems(cfg);
    EXPECT_EQ(problems.empty(), parses(targets, cfg.lora.targets))
        << "'" << text << "': " << (problems.empty() ? "" : problems[0]);
  }
  auto trainable = [](const std::string& t) { peft::parse_trainable(t); };
  for (const std::string text : {"", "embed", "embed,norm,", " norm ", "embed,,norm", ",",
                                 "em bed", "embeds"}) {
    const Config cfg = lora_config("lora.trainable=" + text);
    const std::vector<std::string> problems = config_problems(cfg);
    EXPECT_EQ(problems.empty(), parses(trainable, cfg.lora.trainable))
        << "'" << text << "': " << (problems.empty() ? "" : problems[0]);
  }
  EXPECT_EQ(config_problems(lora_config("lora.targets=")),
            std::vector<std::string>{"lora.targets names no projection (q, k, v, o, gate, up, "
                                     "down, head, all), got ''"});
}

// Each target alone, at one past its min(in, out) and at it, with n_embd 128, a key/value width
// of 32 (one head of four), an MLP width of 64 and an untied head over 257 tokens. Where several
// projections share the smallest size, the refusal names the first in the list ("all" is in model
// order).
TEST(LoraConfig, the_rank_is_held_to_the_smallest_adapted_projection_and_names_it) {
  struct Case {
    const char* targets;
    int64_t limit;
    const char* projection;
  };
  for (const Case& c : {Case{"q", 128, "q (128 x 128)"}, {"k", 32, "k (128 x 32)"},
                        {"v", 32, "v (128 x 32)"}, {"o", 128, "o (128 x 128)"},
                        {"gate", 64, "gate (128 x 64)"}, {"up", 64, "up (128 x 64)"},
                        {"down", 64, "down (64 x 128)"}, {"head", 128, "head (128 x 257)"},
                        {"q,o", 128, "q (128 x 128)"}, {"all", 32, "k (128 x 32)"},
                        {"head,q", 128, "head (128 x 257)"}}) {
    const std::string sizes = "model.n_kv_head=1;model.mlp_hidden=64;lora.targets=" +
                              std::string(c.targets);
    const std::string over = std::to_string(c.limit + 1), at = std::to_string(c.limit);
    EXPECT_EQ(config_problems(lora_config(sizes + ";lora.rank=" + over)),
              std::vector<std::string>{
                  "lora.rank (" + over + ") exceeds min(in, out) = " + at +
                  " of the adapted projection " + c.projection + " (lora.targets '" + c.targets +
                  "'): an update B A has rank <= " + at +
                  " there, so a larger rank adds parameters, not capacity"})
        << c.targets;
    EXPECT_EQ(config_problems(lora_config(sizes + ";lora.rank=" + at)), std::vector<std::string>{})
        << c.targets;
  }
  EXPECT_EQ(config_problems(lora_config("model.mlp_hidden=64;lora.targets=q;lora.rank=100")),
            std::vector<std::string>{});  // the gate (64 wide) is not adapted
  // "all" adapts the gate where there is one: the first projection 64 wide is then the gate.
  for (auto [mlp, first] : {std::pair{"swiglu", "gate (128 x 64)"}, {"gelu", "up (128 x 64)"}}) {
    const std::vector<std::string> problems = config_problems(lora_config(
        std::string("model.mlp=") + mlp + ";model.mlp_hidden=64;lora.targets=all;lora.rank=65"));
    ASSERT_EQ(problems.size(), 1u) << mlp;
    EXPECT_NE(problems[0].find(std::string("of the adapted projection ") + first),
              std::string::npos)
        << problems[0];
  }
}

}  // namespace
}  // namespace tessera
