// The checkpoint tests' shared helpers: a complete sample training state, bit-exact comparisons
// and a fresh directory per test (the Checkpoint fixture).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/tensor.h"

namespace tessera::testing {

namespace fs = std::filesystem;

// The raw bytes of t's elements in logical order: "bit-exact" comparisons use these, so NaN
// payloads and -0.0 count.
inline std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor host = Tensor::empty(t.shape(), t.dtype());
  host.copy_(t);
  const auto* p = static_cast<const uint8_t*>(host.numel() ? host.data_ptr() : nullptr);
  return p ? std::vector<uint8_t>(p, p + host.nbytes()) : std::vector<uint8_t>{};
}

inline void expect_same_tensor(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  EXPECT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_EQ(a.shape(), b.shape()) << what;
  EXPECT_EQ(bytes_of(a), bytes_of(b)) << what;
}

// Errors must name what went wrong: each part has to appear in the message.
inline void expect_mentions(const std::string& msg, const std::vector<std::string>& parts) {
  for (const std::string& part : parts)
    EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
}

inline uint64_t bits_of(double x) {
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return u;
}

inline Tensor bf16_from_bits(const std::vector<uint16_t>& bits, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::BF16);
  std::memcpy(t.data_ptr(), bits.data(), bits.size() * 2);
  return t;
}

inline std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline std::string long_yaml() {
  std::ostringstream os;
  os << "# résumé of the run: 日本語 comments survive\nmodel:\n  n_layer: 12\n";
  for (int i = 0; i < 300; ++i) os << "  key_" << i << ": value number " << i << "\n";
  return os.str();  // ~9 KB, the size of a real resolved config
}

// A small but complete training state: dotted HF names, bf16 and f32 parameters, AdamW m/v/master,
// every trainer/rng/data field kind, a multi-KB config.
inline CheckpointData sample_checkpoint() {
  Generator g(7);
  CheckpointData ck;
  ck.model.emplace_back("transformer.wte.weight", randn({11, 4}, g));
  ck.model.emplace_back("transformer.h.0.ln_1.weight", randn({4}, g));
  ck.model.emplace_back("transformer.h.0.attn.c_attn.weight",
                        bf16_from_bits({0x3f80, 0x8000, 0x7fc1, 0xff80, 0x0001, 0x4049, 0xc2f7,
                                        0x7f7f, 0x0000, 0x3e4c, 0xbf00, 0x1234},
                                       {3, 4}));
  ck.model.emplace_back("lm_head.bias", randn({11}, g));  // out of alphabetical order on purpose
  for (const auto& [name, p] : ck.model) {
    ck.optimizer.emplace_back(name + "/m", randn(p.shape(), g));
    ck.optimizer.emplace_back(name + "/v", rand(p.shape(), g));
    if (p.dtype() == DType::BF16) ck.optimizer.emplace_back(name + "/master", randn(p.shape(), g));
  }
  ck.trainer_ints = {{"step", 500}, {"tokens_seen", int64_t(1) << 40}, {"micro_step", 3},
                     {"skipped", -7}, {"big", std::numeric_limits<int64_t>::max()}};
  ck.trainer_floats = {{"lr", 3e-4}, {"neg_zero", -0.0}, {"denormal", 4.9e-324},
                       {"nan", std::nan("0x5")}, {"inf", -INFINITY}};
  ck.trainer_tensors.emplace_back("loss_window", randn({128}, g, DType::F64));
  ck.rng["dropout"] = RngState{1234, (uint64_t(1) << 63) + 5};
  ck.rng["data"] = RngState{std::numeric_limits<uint64_t>::max(), 0};
  ck.data = {{"epoch", 2}, {"position", 123456789}, {"seed", 42}};
  ck.config_yaml = long_yaml();
  return ck;
}

inline void expect_same_checkpoint(const CheckpointData& a, const CheckpointData& b) {
  auto same_list = [](const auto& x, const auto& y, const std::string& what) {
    ASSERT_EQ(x.size(), y.size()) << what;
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(x[i].first, y[i].first) << what << " #" << i;  // same names, same order
      expect_same_tensor(x[i].second, y[i].second, what + " " + x[i].first);
    }
  };
  same_list(a.model, b.model, "model");
  same_list(a.optimizer, b.optimizer, "optimizer");
  same_list(a.trainer_tensors, b.trainer_tensors, "trainer tensors");
  EXPECT_EQ(a.trainer_ints, b.trainer_ints);
  ASSERT_EQ(a.trainer_floats.size(), b.trainer_floats.size());
  for (const auto& [name, v] : a.trainer_floats) {
    ASSERT_TRUE(b.trainer_floats.count(name)) << name;
    EXPECT_EQ(bits_of(v), bits_of(b.trainer_floats.at(name))) << name;
  }
  EXPECT_EQ(a.rng, b.rng);
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ(a.config_yaml, b.config_yaml);
}

// One fresh directory per test, removed afterwards.
class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tessera_ckpt_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

}  // namespace tessera::testing
