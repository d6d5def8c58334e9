// A model's size as config validation sees it, before anything is allocated: the weight count it
// compares to the host's memory is the model's own, every weight nn::param_specs makes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "config/config.h"
#include "config/expect_contains.h"
#include "nn/hf_names.h"
#include "test_util.h"
#include "train/options.h"

namespace tessera {
namespace {

using testing::error_of;

double weights_the_model_makes(const ModelConfig& m) {
  double n = 0;
  for (const nn::ParamSpec& s : nn::param_specs(train::model_config(m, TrainConfig{})))
    n += double(shape_numel(s.shape));
  return n;
}

// Every architecture switch that adds or removes weights: norms with and without a bias, biases,
// a tied or separate head, learned, rotary or no positions, GELU or SwiGLU at the rule's width or
// a set one, grouped-query attention.
TEST(ModelSize, parameter_count_is_every_weight_the_model_makes) {
  int cases = 0;
  for (const char* norm : {"layernorm", "rmsnorm"})
    for (bool bias : {true, false})
      for (bool tie : {true, false})
        for (const char* position : {"learned", "rope", "none"})
          for (const char* mlp : {"gelu", "swiglu"})
            for (int64_t mlp_hidden : {0, 40})
              for (int64_t n_kv_head : {0, 2}) {
                ModelConfig m;
                m.n_layer = 3, m.n_head = 4, m.n_embd = 40, m.block_size = 24, m.vocab_size = 97;
                m.norm = norm, m.bias = bias, m.tie_embeddings = tie, m.position = position;
                m.mlp = mlp, m.mlp_hidden = mlp_hidden, m.n_kv_head = n_kv_head;
                SCOPED_TRACE(std::string(norm) + " bias " + std::to_string(bias) + " tie " +
                             std::to_string(tie) + " " + position + " " + mlp + " hidden " +
                             std::to_string(mlp_hidden) + " kv " + std::to_string(n_kv_head));
                EXPECT_EQ(m.parameter_count(), weights_the_model_makes(m));
                ++cases;
              }
  EXPECT_EQ(cases, 192);
}

// The attention's own weights: heads of a set width (q and the output projection n_head x head_dim
// wide), qk_norm's two norms a layer, Forgetting Attention's gate.
TEST(ModelSize, parameter_count_has_head_dims_qk_norms_and_forget_gates) {
  for (int64_t head_dim : {0, 6, 24})
    for (bool qk_norm : {false, true})
      for (const char* attention : {"softmax", "forgetting"}) {
        ModelConfig m;
        m.n_layer = 2, m.n_head = 4, m.n_kv_head = 2, m.n_embd = 40, m.vocab_size = 97;
        m.explicit_head_dim = head_dim, m.qk_norm = qk_norm, m.attention = attention;
        EXPECT_EQ(m.parameter_count(), weights_the_model_makes(m))
            << head_dim << " " << qk_norm << " " << attention;
      }
}

// A mixture of experts: a router (E, C) and E MLPs a layer; a token meets k of them.
TEST(ModelSize, parameter_count_has_every_expert_and_the_active_count_k_of_them) {
  for (const char* mlp : {"gelu", "swiglu"})
    for (bool bias : {true, false})
      for (auto [experts, top_k] : {std::pair{0, 2}, {2, 1}, {4, 2}, {8, 8}}) {
        ModelConfig m;
        m.n_layer = 2, m.n_head = 4, m.n_embd = 40, m.vocab_size = 97, m.mlp_hidden = 24;
        m.mlp = mlp, m.bias = bias, m.n_expert = experts, m.expert_top_k = top_k;
        SCOPED_TRACE(std::string(mlp) + " bias " + std::to_string(bias) + " experts " +
                     std::to_string(experts) + " top " + std::to_string(top_k));
        EXPECT_EQ(m.parameter_count(), weights_the_model_makes(m));
        ModelConfig dense = m;
        dense.n_expert = 0;
        const double one_mlp = (std::string(mlp) == "swiglu" ? 3 : 2) * 40.0 * 24 +
                               (bias ? (std::string(mlp) == "swiglu" ? 2 * 24 : 24) + 40 : 0);
        const double active = experts == 0 ? m.parameter_count()
                                           : dense.parameter_count() +
                                                 2 * (double(top_k - 1) * one_mlp + experts * 40.0);
        EXPECT_EQ(m.active_parameter_count(), active);
      }
}

// SwiGLU's width rule at sizes where 8 n_embd / 3 is and is not a multiple of 64 (24 and 48: 64
// and 128 exactly; 25 and 100: just past 64 and 256).
TEST(ModelSize, swiglu_width_rounds_two_thirds_of_4_n_embd_up_to_64) {
  for (auto [n_embd, width] : {std::pair{24, 64}, {25, 128}, {48, 128}, {100, 320}, {768, 2048}}) {
    ModelConfig m;
    m.mlp = "swiglu", m.n_embd = n_embd, m.n_head = 1;
    EXPECT_EQ(m.hidden(), width) << n_embd;
    EXPECT_EQ(m.parameter_count(), weights_the_model_makes(m)) << n_embd;
  }
}

// A model no host holds is refused by its size in f32, with the keys that make it.
TEST(ModelSize, weights_past_the_hosts_memory_are_refused_with_the_sizes) {
  Config cfg;
  apply_override(cfg, "model.n_layer=4294967300");
  const double params = cfg.model.parameter_count();
  char need[96];
  std::snprintf(need, sizeof need, "%.3g parameters need %.3g GiB", params,
                4 * params / double(1 << 30));
  EXPECT_STREQ(need, "8.52e+14 parameters need 3.17e+06 GiB");  // 198272 a layer (n_embd 128)
  const long host_gib =
      std::lround(double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE)) / (1 << 30));
  EXPECT_CONTAINS(error_of([&] { cfg.validate(); }),
                  "model: " + std::string(need) + " for their f32 weights alone, more than this "
                  "host's " + std::to_string(host_gib) + " GiB of memory (model.n_layer "
                  "4294967300, model.n_embd 128, model.vocab_size 257, MLP width 512)");
}

}  // namespace
}  // namespace tessera
