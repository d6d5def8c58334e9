// safetensors: what the writer lays down is the format's specification byte for byte, and the
// reader refuses every malformed file with an error naming it (and the tensor), never crashing.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "checkpoint/json.h"
#include "checkpoint/safetensors.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::TempDir;

namespace {

// A file from a header text and a data buffer: 8-byte little-endian length, header, data.
std::string file_of(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string bytes_of(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

}  // namespace

TEST(Safetensors, written_file_follows_the_spec_and_reads_back) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector<float>({-1.5f, 2.25f}, {2}).to(DType::BF16);
  Tensor c = from_vector<int32_t>({7}, {1});
  write_safetensors(path, {{"a.weight", a}, {"b\"q", b}, {"c", c}},
                    {{"format", "pt"}, {"step", "12"}});

  std::ifstream f(path, std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  const Json h = parse_json(raw.substr(8, n), "header");
  EXPECT_EQ(h.at("a.weight").at("dtype").str(), "F32");
  EXPECT_EQ(h.at("b\"q").at("dtype").str(), "BF16");
  EXPECT_EQ(h.at("c").at("data_offsets").items()[1].as_int(), 24 + 4 + 4);  // contiguous
  EXPECT_EQ(h.at("__metadata__").at("format").str(), "pt");
  EXPECT_EQ(h.at("__metadata__").at("step").str(), "12");
  EXPECT_EQ(raw.size(), 8 + n + 32);  // the buffer holds the tensors and nothing else
  float first;
  std::memcpy(&first, raw.data() + 8 + n, 4);
  EXPECT_EQ(first, 1.0f);  // row-major from the first byte of the buffer

  SafetensorsFile back = read_safetensors(path);
  ASSERT_EQ(back.tensors.size(), 3u);
  EXPECT_EQ(back.tensors[0].first, "a.weight");
  EXPECT_EQ(tessera::testing::bytes(back.tensors[0].second), tessera::testing::bytes(a));
  EXPECT_EQ(back.tensors[1].second.dtype(), DType::BF16);
  EXPECT_EQ(tessera::testing::bytes(back.tensors[1].second), tessera::testing::bytes(b));
  EXPECT_EQ(back.tensors[2].second.to_vector<int32_t>(), std::vector<int32_t>{7});
  EXPECT_EQ(back.metadata.at("format"), "pt");
  EXPECT_EQ(back.metadata.at("step"), "12");
}

TEST(Safetensors, f16_is_widened_exactly) {
  // 1.0, -2.0, the smallest subnormal 2^-24, +infinity.
  const uint16_t h[4] = {0x3C00, 0xC000, 0x0001, 0x7C00};
  const std::string data(reinterpret_cast<const char*>(h), 8);
  SafetensorsFile f = parse_safetensors(
      file_of(R"({"x":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", data), "f16");
  const std::vector<float> v = f.tensors[0].second.to_vector<float>();
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(v[3]));
  EXPECT_EQ(f.stored_dtype.at("x"), "F16");
}

TEST(Safetensors, malformed_files_are_refused_by_name) {
  const std::string d8 = bytes_of({1, 2});
  auto err = [](const std::string& bytes) {
    return error_of([&] { parse_safetensors(bytes, "bad.safetensors"); });
  };
  const std::string good = file_of(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d8);
  EXPECT_NO_THROW(parse_safetensors(good, "good"));

  std::string m = err(good.substr(0, good.size() - 1));  // truncated data
  EXPECT_TRUE(has(m, "bad.safetensors") && has(m, "'w'")) << m;
  m = err(good.substr(0, 20));  // truncated inside the header
  EXPECT_TRUE(has(m, "bad.safetensors") && has(m, "header length")) << m;
  m = err(std::string(5, '\0'));
  EXPECT_TRUE(has(m, "too short")) << m;
  std::string huge = good;
  for (int i = 0; i < 8; ++i) huge[size_t(i)] = char(0xFF);  // 2^64 - 1
  m = err(huge);
  EXPECT_TRUE(has(m, "header length")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", d8));  // no '}'
  EXPECT_TRUE(has(m, "JSON error")) << m;
  m = err(file_of(R"({"w":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "unknown dtype \"F17\"")) << m;
  m = err(file_of(R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "no tessera counterpart")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "run past")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "needs 12 bytes")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "not ordered")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "negative")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
                  d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "larger than the file")) << m;
  // No elements, but a tensor of that shape would have strides past 2^63 (UBSan: signed overflow
  // in the strides). A zero dimension beside sizes the file can hold is an empty tensor.
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})",
                  ""));
  EXPECT_TRUE(has(m, "'w'") && has(m, "larger than the file")) << m;
  const Tensor empty = parse_safetensors(
      file_of(R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})", ""), "empty").tensors.at(0).second;
  EXPECT_EQ(empty.shape(), (Shape{0, 3}));
  const std::string d16 = bytes_of({1, 2, 3, 4});
  m = err(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", d16));
  EXPECT_TRUE(has(m, "'b'") && has(m, "overlaps")) << m;
  m = err(file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", d16));
  EXPECT_TRUE(has(m, "'b'") && has(m, "hole")) << m;
  m = err(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d16));
  EXPECT_TRUE(has(m, "trailing")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", d16));
  EXPECT_TRUE(has(m, "duplicate key \"w\"")) << m;
  m = err(file_of(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", d8));
  EXPECT_TRUE(has(m, "'w'") && has(m, "unknown field")) << m;
  m = err(file_of(R"({"__metadata__":{"k":3}})", ""));
  EXPECT_TRUE(has(m, "__metadata__")) << m;
  m = err(file_of(R"([1, 2])", ""));
  EXPECT_TRUE(has(m, "not a JSON object")) << m;
  m = err(file_of(std::string(5000, '[') + std::string(5000, ']'), ""));  // no stack overflow
  EXPECT_TRUE(has(m, "nested deeper")) << m;
}

TEST(Safetensors, a_directory_is_refused_as_a_directory) {
  TempDir tmp("tessera_safetensors");
  const std::string dir = tmp.file("model.safetensors");
  std::filesystem::create_directories(dir);
  const std::string m = error_of([&] { read_safetensors(dir); });
  EXPECT_TRUE(has(m, dir + ": is a directory")) << m;
  EXPECT_FALSE(has(m, "too short")) << m;
}

TEST(Safetensors, every_truncation_and_byte_flip_is_an_error_or_a_valid_read) {
  // Never a crash: each prefix of a good file, and the file with each header byte replaced.
  const std::string good = file_of(
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[],"data_offsets":[8,10]}})",
      bytes_of({1, 2}) + std::string("\x80\x3f", 2));
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_THROW(parse_safetensors(good.substr(0, n), "prefix"), Error) << n << " bytes";
  for (size_t i = 0; i < good.size() - 10; ++i) {
    std::string bad = good;
    bad[i] = char(bad[i] ^ 0x5A);
    try {
      parse_safetensors(bad, "flipped");
    } catch (const Error&) {
    }
  }
}

TEST(Safetensors, writer_refuses_bad_names_and_leaves_no_file) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  Tensor t = from_vector<float>({1}, {1});
  EXPECT_TRUE(has(error_of([&] { write_safetensors(path, {{"a", t}, {"a", t}}); }), "'a' given twice"));
  EXPECT_TRUE(has(error_of([&] { write_safetensors(path, {{"__metadata__", t}}); }), "invalid"));
  EXPECT_TRUE(has(error_of([&] { write_safetensors(path, {{"a", t}, {"b", Tensor()}}); }),
                  "tensor 'b' is undefined"));
  EXPECT_FALSE(std::filesystem::exists(path));
}
