// Attention choices are validated with the rest of the config, on the device the run will use:
// a combination no kernel runs fails at validation with the kernel's reason, not at the first
// forward (ops/attention_spec.h's attention_support).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "config/config.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
namespace fs = std::filesystem;

namespace {
fs::path configs_dir() {
  return fs::path(__FILE__).parent_path().parent_path().parent_path() / "configs";
}
}  // namespace

TEST(AttentionConfig, sb_small_on_cuda_is_rejected_at_validation_with_the_reason) {
  const std::string path = (configs_dir() / "sb-small.yaml").string();
  EXPECT_NO_THROW(load_config(path));  // the CPU run it was written for
  const std::string e = error_of([&] { load_config(path, {"train.device=cuda"}); });
  EXPECT_NE(e.find("model.attention 'stick_breaking' cannot run on train.device cuda: CUDA "
                   "stick-breaking attention needs head dim 64 or 128 in bf16, got head dim 32 "
                   "(model.n_embd / model.n_head = 128 / 4)"),
            std::string::npos)
      << e;
  // Head dim 64 runs there.
  EXPECT_NO_THROW(load_config(path, {"train.device=cuda", "model.n_head=2"}));
}

TEST(AttentionConfig, softmax_on_cuda_takes_any_head_dim) {
  // Other head dims than 64 and 128 run on the materialised CUDA kernel.
  EXPECT_NO_THROW(load_config((configs_dir() / "rope-small.yaml").string(), {"train.device=cuda"}));
}

TEST(AttentionConfig, sliding_window_is_validated_with_the_attention) {
  const std::string rope = (configs_dir() / "rope-small.yaml").string();
  EXPECT_EQ(load_config(rope, {"model.sliding_window=32"}).model.sliding_window, 32);
  EXPECT_NE(error_of([&] { load_config(rope, {"model.sliding_window=-1"}); })
                .find("model.sliding_window"),
            std::string::npos);
  const std::string sb = (configs_dir() / "sb-small.yaml").string();
  std::string e = error_of([&] { load_config(sb, {"model.sliding_window=32"}); });
  EXPECT_NE(e.find("model.sliding_window applies to model.attention softmax only (got attention "
                   "'stick_breaking')"),
            std::string::npos)
      << e;
  // On CUDA the window runs in the flash kernel only, whose bf16 tiles take head dims 64 and 128.
  e = error_of([&] { load_config(rope, {"model.sliding_window=32", "train.device=cuda"}); });
  EXPECT_NE(e.find("CUDA sliding-window attention (flash kernel) needs head dim 64 or 128 in bf16, "
                   "got head dim 32"),
            std::string::npos)
      << e;
  EXPECT_NO_THROW(
      load_config(rope, {"model.sliding_window=32", "train.device=cuda", "model.n_head=2"}));
}

TEST(AttentionConfig, a_training_length_the_materialised_cuda_kernel_cannot_hold_is_rejected) {
  // Head dim 32 on CUDA runs the materialised softmax kernel, whose row of T scores lives in
  // shared memory; the flash kernel (head dim 64) takes any length.
  const std::string rope = (configs_dir() / "rope-small.yaml").string();
  const std::string e =
      error_of([&] { load_config(rope, {"train.device=cuda", "model.block_size=16384"}); });
  EXPECT_NE(e.find("T + head dim must be <= 12224, got T = 16384"), std::string::npos) << e;
  EXPECT_NO_THROW(load_config(rope, {"train.device=cuda", "model.block_size=16384", "model.n_head=2"}));
  EXPECT_NO_THROW(load_config(rope, {"model.block_size=16384"}));  // the CPU kernels: any T
}

TEST(AttentionConfig, unknown_kind_lists_the_kinds_of_the_one_list) {
  const std::string e = error_of([&] {
    load_config((configs_dir() / "sb-small.yaml").string(), {"model.attention=linear"});
  });
  EXPECT_NE(
      e.find("model.attention must be one of softmax, stick_breaking, forgetting; got 'linear'"),
      std::string::npos)
      << e;
}

TEST(AttentionConfig, document_windows_need_strided_kernels_and_no_s2_attn) {
  const std::string rope = (configs_dir() / "rope-small.yaml").string();
  EXPECT_EQ(load_config(rope, {"data.windows=documents"}).data.windows, "documents");
  std::string e = error_of([&] {
    load_config(rope, {"data.windows=documents", "train.s2_attn=true"});
  });
  EXPECT_NE(e.find("data.windows 'documents' attends each document on its own; train.s2_attn's "
                   "shifted groups would cross them"),
            std::string::npos)
      << e;
  // Softmax on CUDA at head dim 32 runs the materialised kernel, which reads no strided heads.
  e = error_of([&] { load_config(rope, {"data.windows=documents", "train.device=cuda"}); });
  EXPECT_NE(e.find("data.windows 'documents' needs attention kernels that read strided heads, "
                   "which softmax on train.device cuda lacks at head dim 32"),
            std::string::npos)
      << e;
  EXPECT_NO_THROW(
      load_config(rope, {"data.windows=documents", "train.device=cuda", "model.n_head=2"}));
  e = error_of([&] { load_config(rope, {"data.windows=document"}); });
  EXPECT_NE(e.find("data.windows"), std::string::npos) << e;
  EXPECT_NE(e.find("documents"), std::string::npos) << e;
}

TEST(AttentionConfig, alibi_is_a_position_kind_for_softmax_attention) {
  const std::string alibi = (configs_dir() / "alibi-small.yaml").string();
  const Config c = load_config(alibi);
  EXPECT_EQ(c.model.position, "alibi");
  std::string e = error_of([&] { load_config(alibi, {"model.attention=stick_breaking"}); });
  EXPECT_NE(e.find("model.attention 'stick_breaking' cannot run on train.device cpu: ALiBi applies "
                   "to softmax attention only, not stick_breaking"),
            std::string::npos)
      << e;
  e = error_of([&] { load_config(alibi, {"train.s2_attn=true"}); });
  EXPECT_NE(e.find("ALiBi with S^2-Attn"), std::string::npos) << e;
  e = error_of([&] { load_config(alibi, {"model.rope_scaling.type=linear"}); });
  EXPECT_NE(e.find("model.position is 'alibi' (not rope)"), std::string::npos) << e;
  // On CUDA ALiBi runs in the flash kernels only, whose bf16 tiles take head dims 64 and 128.
  e = error_of([&] { load_config(alibi, {"train.device=cuda"}); });
  EXPECT_NE(e.find("CUDA ALiBi attention (flash kernel) needs head dim 64 or 128 in bf16, got head "
                   "dim 32"),
            std::string::npos)
      << e;
  EXPECT_NO_THROW(load_config(alibi, {"train.device=cuda", "model.n_head=2"}));
  e = error_of([&] { load_config(alibi, {"model.position=alibis"}); });
  EXPECT_NE(e.find("model.position"), std::string::npos) << e;
}

TEST(AttentionConfig, forgetting_is_softmax_attention_with_a_forget_gate) {
  const std::string fox = (configs_dir() / "fox-small.yaml").string();
  const Config c = load_config(fox);
  EXPECT_EQ(c.model.attention, "forgetting");
  EXPECT_EQ(c.model.position, "none");
  EXPECT_NO_THROW(load_config(fox, {"model.position=rope"}));  // the paper's option
  EXPECT_NO_THROW(load_config(fox, {"data.windows=documents"}));
  const std::pair<const char*, const char*> refused[] = {
      {"model.position=alibi",
       "model.attention 'forgetting' cannot run on train.device cpu: ALiBi applies to softmax "
       "attention only, not forgetting"},
      {"model.sliding_window=8", "model.sliding_window applies to model.attention softmax only"},
      {"train.s2_attn=true", "forgetting attention with S^2-Attn"},
      // On CUDA it runs in the flash kernels only, whose bf16 tiles take head dims 64 and 128.
      {"train.device=cuda",
       "model.attention 'forgetting' cannot run on train.device cuda: CUDA forgetting attention "
       "(flash kernel) needs head dim 64 or 128 in bf16, got head dim 32"},
  };
  for (const auto& [set, want] : refused) {
    const std::string e = error_of([&] { load_config(fox, {set}); });
    EXPECT_NE(e.find(want), std::string::npos) << set << ": " << e;
  }
  EXPECT_NO_THROW(load_config(fox, {"train.device=cuda", "model.n_head=2"}));
}
