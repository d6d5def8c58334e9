// train.device on a machine without a usable GPU (what CI has): a CUDA run fails at once with an
// error that says why, every training mode passes the config check (only lora.trainable is refused,
// with its reason), and place_model moves a model's parameters (names, gradients and all) --
// exercised here as a move to f64 on the CPU.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "backend/cuda.h"
#include "nn/gpt.h"
#include "test_util.h"
#include "train/device.h"
#include "train/train_fixture.h"
#include "train/trainer.h"

namespace tessera {
namespace {

using testing::error_of;

TEST(Device, cuda_run_without_a_usable_gpu_fails_with_the_reason) {
  if (cuda::available()) GTEST_SKIP() << "a CUDA device is present";
  testing::TempRun run;
  Config c = run.config(5);
  c.train.device = "cuda";
  std::ostringstream log;
  const std::string msg = error_of([&] { train::run_training(c, log); });
  EXPECT_NE(msg.find("train.device: 'cuda'"), std::string::npos) << msg;
  EXPECT_TRUE(msg.find("built without CUDA") != std::string::npos ||
              msg.find("no CUDA device") != std::string::npos)
      << msg;
  EXPECT_FALSE(std::filesystem::exists(run.dir / "ckpt" / "run" / "metrics.jsonl"))
      << "nothing was started";
}

TEST(Device, every_training_mode_passes_the_config_check_on_cuda) {
  Config c;
  c.train.device = "cuda";
  // LOMO, AdaLomo, LoRA and QLoRA run on CUDA: what can stop them is the machine, not the config.
  auto machine_only = [&](const Config& cfg) {
    if (cuda::available()) {
      EXPECT_TRUE(train::placement(cfg).device.is_cuda());
      return;
    }
    const std::string msg = error_of([&] { train::placement(cfg); });
    EXPECT_TRUE(msg.find("built without CUDA") != std::string::npos ||
                msg.find("no CUDA device") != std::string::npos)
        << msg;
    EXPECT_EQ(msg.find("CPU only"), std::string::npos) << msg;
  };
  for (const char* name : {"lomo", "adalomo"}) {
    c.optim.name = name;
    machine_only(c);
  }
  c.optim.name = "adamw";
  c.lora.rank = 8;
  for (const char* q : {"none", "nf4", "nf4-dq"}) {
    c.lora.quantize = q;
    machine_only(c);
  }
  // Still refused, with the reason: full tensors trained beside f32 adapters on the GPU.
  c.lora.trainable = "embed,norm";
  const std::string msg = error_of([&] { train::placement(c); });
  EXPECT_NE(msg.find("lora.trainable"), std::string::npos) << msg;
  c.train.device = "cpu";  // the CPU takes all of them
  EXPECT_EQ(train::placement(c).device, Device::cpu());
  EXPECT_EQ(train::placement(c).dtype, DType::F32);
}

TEST(Device, place_model_moves_every_parameter_keeping_names_and_gradients) {
  nn::GPTConfig cfg;
  cfg.n_layer = 1, cfg.n_head = 2, cfg.n_embd = 16, cfg.block_size = 8, cfg.vocab_size = 11;
  Generator g1(3), g2(3);
  nn::GPT ref(cfg, g1), moved(cfg, g2);
  train::place_model(moved, Device::cpu(), DType::F64);
  ASSERT_EQ(moved.parameters().size(), ref.parameters().size());
  for (size_t i = 0; i < ref.parameters().size(); ++i) {
    const auto& [name, t] = moved.parameters()[i];
    EXPECT_EQ(name, ref.parameters()[i].first);
    EXPECT_EQ(t.name(), name);
    EXPECT_EQ(t.dtype(), DType::F64) << name;
    EXPECT_TRUE(t.requires_grad() && t.is_leaf()) << name;
    EXPECT_NE(t.data_ptr(), ref.parameters()[i].second.data_ptr()) << name;
  }
  EXPECT_EQ(train::model_device(moved), Device::cpu());
  const Tensor in = from_vector<int32_t>({1, 2, 3, 4, 5, 6, 7, 8}, {1, 8});
  const Tensor tg = from_vector<int32_t>({2, 3, 4, 5, 6, 7, 8, 9}, {1, 8});
  Tensor a = ref.loss(in, tg), b = moved.loss(in, tg);
  b.backward();
  EXPECT_NEAR(b.item(), a.item(), 1e-5 * a.item());  // the same weights, computed in f64
  for (const auto& [name, t] : moved.parameters())
    EXPECT_TRUE(t.grad().defined() && t.grad().dtype() == DType::F64) << name;
  // Placing where the parameters already are changes nothing.
  const void* before = moved.parameters().front().second.data_ptr();
  train::place_model(moved, Device::cpu(), DType::F64);
  EXPECT_EQ(moved.parameters().front().second.data_ptr(), before);
}

}  // namespace
}  // namespace tessera
