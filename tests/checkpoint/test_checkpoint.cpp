// Checkpoints: HDF5 tensor I/O (every dtype, bit for bit), the checkpoint layout, in-place model
// loading with its name/shape checks, errors on corrupt files and the atomic commit. `latest`:
// test_latest.cpp.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "backend/cuda.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "checkpoint/sidecar.h"
#include "checkpoint_fixture.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace tessera;
using namespace tessera::testing;
namespace fs = std::filesystem;

// ---- tensors ----

TEST_F(Checkpoint, tensor_round_trip_keeps_dtype_shape_and_bits) {
  float nan_payload;
  uint32_t nan_bits = 0x7fa00001u;  // a signalling NaN with a payload: must not be canonicalised
  std::memcpy(&nan_payload, &nan_bits, 4);
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"/f32", from_vector<float>({1.5f, -0.0f, nan_payload, INFINITY, 1e-45f, -3.25f}, {2, 3})},
      {"/f64", from_vector<double>({0.1, -0.0, 4.9e-324, -1e308}, {2, 2})},
      {"/i32", from_vector<int32_t>({std::numeric_limits<int32_t>::min(), -1, 0,
                                     std::numeric_limits<int32_t>::max()},
                                    {4})},
      {"/u8", from_vector<uint8_t>({0, 1, 127, 128, 254, 255}, {1, 2, 3})},
      {"/bf16", bf16_from_bits({0x3f80, 0x8000, 0x7fc1, 0xff80, 0x0001, 0xffff}, {3, 2})},
      {"/scalar", full({}, 7.5)},
      {"/scalar_bf16", bf16_from_bits({0xc0a0}, {})},
      {"/empty", Tensor::empty({0, 3})},
      {"/rank4", arange(0, 24, 1, DType::I32).view({1, 2, 3, 4})},
  };
  {
    H5File f = H5File::create(path("t.h5"));
    for (const auto& [name, t] : tensors) write_tensor(f, name, t);
    f.close();
  }
  H5File f = H5File::open(path("t.h5"));
  for (const auto& [name, t] : tensors) expect_same_tensor(read_tensor(f, name), t, name);
  EXPECT_EQ(read_tensor(f, "/scalar").dim(), 0);
  EXPECT_EQ(read_tensor(f, "/scalar").item(), 7.5);
}

TEST_F(Checkpoint, dtypes_are_stored_as_native_hdf5_types_and_bf16_as_marked_uint16) {
  {
    H5File f = H5File::create(path("t.h5"));
    write_tensor(f, "/a", zeros({2}, DType::F32));
    write_tensor(f, "/b", zeros({2}, DType::F64));
    write_tensor(f, "/c", zeros({2}, DType::I32));
    write_tensor(f, "/d", zeros({2}, DType::U8));
    write_tensor(f, "/e", bf16_from_bits({0x3f80, 0x4000}, {2}));
    write_tensor(f, "/s", full({}, 1.0));
    f.close();
  }
  H5File f = H5File::open(path("t.h5"));
  EXPECT_EQ(f.dataset_info("/a").elem, H5Elem::F32);
  EXPECT_EQ(f.dataset_info("/b").elem, H5Elem::F64);
  EXPECT_EQ(f.dataset_info("/c").elem, H5Elem::I32);
  EXPECT_EQ(f.dataset_info("/d").elem, H5Elem::U8);
  EXPECT_EQ(f.dataset_info("/e").elem, H5Elem::U16);
  EXPECT_EQ(f.attr_string("/e", "dtype"), "bf16");
  EXPECT_FALSE(f.has_attr("/a", "dtype"));  // only bf16 needs the marker
  EXPECT_EQ(f.dataset_info("/s").shape, Shape{});
  std::vector<uint16_t> bits(2);
  f.read_dataset("/e", H5Elem::U16, bits.data());
  EXPECT_EQ(bits, (std::vector<uint16_t>{0x3f80, 0x4000}));  // exactly the bf16 bits
}

TEST_F(Checkpoint, unmarked_uint16_dataset_is_not_a_tensor) {
  {
    H5File f = H5File::create(path("t.h5"));
    std::vector<uint16_t> v = {1, 2};
    f.write_dataset("/raw", H5Elem::U16, {2}, v.data());
    std::vector<int64_t> w = {1, 2};
    f.write_dataset("/wide", H5Elem::I64, {2}, w.data());
    f.close();
  }
  H5File f = H5File::open(path("t.h5"));
  std::string msg = error_of([&] { read_tensor(f, "/raw"); });
  EXPECT_NE(msg.find("/raw"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stores u16 without dtype = \"bf16\""), std::string::npos) << msg;
  EXPECT_NE(msg.find(path("t.h5")), std::string::npos) << msg;
  // Only a u16 dataset is told what it lacks: an i64 one is no tensor with or without the marker.
  msg = error_of([&] { read_tensor(f, "/wide"); });
  EXPECT_NE(msg.find("stores i64; tensors are"), std::string::npos) << msg;
}

TEST_F(Checkpoint, dotted_names_are_one_dataset_and_slashes_make_groups) {
  const std::string name = "transformer.h.0.attn.c_attn.weight";
  {
    H5File f = H5File::create(path("t.h5"));
    write_tensor(f, "/model/" + name, zeros({6, 2}));
    write_tensor(f, "/optimizer/" + name + "/m", zeros({6, 2}));
    f.close();
  }
  H5File f = H5File::open(path("t.h5"));
  std::vector<H5Entry> all = f.walk("/");
  std::vector<std::pair<std::string, bool>> got;
  for (const H5Entry& e : all) got.emplace_back(e.path, e.is_group);
  std::vector<std::pair<std::string, bool>> want = {
      {"model", true},
      {"model/" + name, false},
      {"optimizer", true},
      {"optimizer/" + name, true},
      {"optimizer/" + name + "/m", false},
  };
  EXPECT_EQ(got, want);
  EXPECT_TRUE(f.is_dataset("/model/" + name));
  EXPECT_FALSE(f.exists("/model/transformer"));  // no group per dot
  EXPECT_FALSE(f.exists("/model/" + name + "/m"));  // below a dataset: not there, not an error
}

TEST_F(Checkpoint, paths_hdf5_would_silently_rewrite_are_rejected) {
  H5File f = H5File::create(path("t.h5"));
  for (std::string bad : {"/model//w", "/model/./w", "/model/../w", "model/w", "/model/w/"}) {
    std::string msg = error_of([&] { write_tensor(f, bad, zeros({1})); });
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  }
  write_tensor(f, "/w", zeros({1}));
  std::string msg = error_of([&] { write_tensor(f, "/w", zeros({1})); });
  EXPECT_NE(msg.find("already exists"), std::string::npos) << msg;
  msg = error_of([&] { write_tensor(f, "/undefined", Tensor()); });
  EXPECT_NE(msg.find("/undefined"), std::string::npos) << msg;
}

TEST_F(Checkpoint, strided_tensor_is_written_as_its_logical_values) {
  Tensor base = arange(0, 6).view({2, 3});
  Tensor t = base.transpose(0, 1);  // (3, 2), not contiguous
  {
    H5File f = H5File::create(path("t.h5"));
    write_tensor(f, "/t", t);
    f.close();
  }
  H5File f = H5File::open(path("t.h5"));
  EXPECT_EQ(read_tensor(f, "/t").to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  // ... and read back into a strided destination.
  Tensor dst_base = zeros({2, 3});
  Tensor dst = dst_base.transpose(0, 1);
  read_tensor_into(f, "/t", dst);
  EXPECT_EQ(dst_base.to_vector<float>(), base.to_vector<float>());
}

TEST_F(Checkpoint, read_tensor_into_fills_in_place_and_checks_shape_and_dtype) {
  const std::string file = path("t.h5");
  {
    H5File f = H5File::create(file);
    write_tensor(f, "/model/w.weight", arange(0, 6).view({2, 3}));
    f.close();
  }
  H5File f = H5File::open(file);
  Tensor dst = zeros({2, 3});
  void* before = dst.data_ptr();
  read_tensor_into(f, "/model/w.weight", dst);
  EXPECT_EQ(dst.data_ptr(), before);
  EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4, 5}));

  Tensor wrong_shape = zeros({3, 2});
  std::string msg = error_of([&] { read_tensor_into(f, "/model/w.weight", wrong_shape); });
  expect_mentions(msg, {"/model/w.weight", file, "(2, 3)", "(3, 2)"});
  Tensor wrong_dtype = zeros({2, 3}, DType::F64);
  msg = error_of([&] { read_tensor_into(f, "/model/w.weight", wrong_dtype); });
  expect_mentions(msg, {"/model/w.weight", file, "f32", "f64"});
  EXPECT_EQ(wrong_shape.to_vector<float>(), std::vector<float>(6, 0.0f));  // untouched
  msg = error_of([&] { read_tensor_into(f, "/model/missing", dst); });
  EXPECT_NE(msg.find("/model/missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
}

TEST_F(Checkpoint, tensors_on_cuda_round_trip) {
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device";
  Tensor host = bf16_from_bits({0x3f80, 0x8000, 0x7fc1, 0x0001}, {2, 2});
  Tensor dev = host.to(Device::cuda());
  {
    H5File f = H5File::create(path("t.h5"));
    write_tensor(f, "/w", dev);
    write_tensor(f, "/wt", dev.transpose(0, 1));
    f.close();
  }
  H5File f = H5File::open(path("t.h5"));
  expect_same_tensor(read_tensor(f, "/w"), host, "/w");
  Tensor back = zeros({2, 2}, {DType::BF16, Device::cuda()});
  read_tensor_into(f, "/w", back);
  EXPECT_TRUE(back.device().is_cuda());
  expect_same_tensor(back, host, "into cuda");
  expect_same_tensor(read_tensor(f, "/wt"), host.transpose(0, 1), "/wt");
}

// ---- attributes ----

TEST_F(Checkpoint, scalars_and_strings_round_trip_as_attributes) {
  const std::string yaml = long_yaml();
  {
    H5File f = H5File::create(path("a.h5"));
    f.create_group("/trainer");
    f.set_attr_int("/trainer", "min", std::numeric_limits<int64_t>::min());
    f.set_attr_int("/trainer", "max", std::numeric_limits<int64_t>::max());
    f.set_attr_uint("/trainer", "umax", std::numeric_limits<uint64_t>::max());
    f.set_attr_float("/trainer", "neg_zero", -0.0);
    f.set_attr_float("/trainer", "tiny", 4.9e-324);
    f.set_attr_string("/", "config", "to be replaced");
    f.set_attr_string("/", "config", yaml);
    f.set_attr_string("/", "empty", "");
    f.set_attr_string("/", "huge", std::string(200000, 'x'));  // past 64 KB object headers
    f.close();
  }
  H5File f = H5File::open(path("a.h5"));
  EXPECT_EQ(f.attr_int("/trainer", "min"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.attr_int("/trainer", "max"), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(f.attr_uint("/trainer", "umax"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(bits_of(f.attr_float("/trainer", "neg_zero")), bits_of(-0.0));
  EXPECT_EQ(bits_of(f.attr_float("/trainer", "tiny")), bits_of(4.9e-324));
  EXPECT_EQ(f.attr_string("/", "config"), yaml);
  EXPECT_GT(yaml.size(), 5000u);
  EXPECT_EQ(f.attr_string("/", "empty"), "");
  EXPECT_EQ(f.attr_string("/", "huge"), std::string(200000, 'x'));
  EXPECT_EQ(f.attr_kind("/trainer", "max"), H5AttrKind::Int);
  EXPECT_EQ(f.attr_kind("/trainer", "tiny"), H5AttrKind::Float);
  EXPECT_EQ(f.attr_kind("/", "config"), H5AttrKind::String);
  EXPECT_EQ(f.attr_names("/trainer"),
            (std::vector<std::string>{"max", "min", "neg_zero", "tiny", "umax"}));

  // Reading the wrong kind, or a value that does not fit, is an error naming the attribute.
  std::string msg = error_of([&] { f.attr_float("/trainer", "max"); });
  EXPECT_NE(msg.find("max"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/trainer"), std::string::npos) << msg;
  msg = error_of([&] { f.attr_int("/trainer", "umax"); });
  EXPECT_NE(msg.find("umax"), std::string::npos) << msg;
  msg = error_of([&] { f.attr_uint("/trainer", "min"); });
  EXPECT_NE(msg.find("negative"), std::string::npos) << msg;
  msg = error_of([&] { f.attr_int("/trainer", "nope"); });
  EXPECT_NE(msg.find("nope"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path("a.h5")), std::string::npos) << msg;
}

// ---- checkpoints ----

TEST_F(Checkpoint, checkpoint_round_trip_is_bit_exact) {
  CheckpointData ck = sample_checkpoint();
  save_checkpoint(path("step_00000500.h5"), ck);
  CheckpointData back = load_checkpoint(path("step_00000500.h5"));
  expect_same_checkpoint(ck, back);
  for (const auto& [name, t] : back.model) EXPECT_TRUE(t.device().is_cpu()) << name;
}

TEST_F(Checkpoint, empty_checkpoint_round_trips) {
  save_checkpoint(path("empty.h5"), CheckpointData{});
  expect_same_checkpoint(load_checkpoint(path("empty.h5")), CheckpointData{});
}

TEST_F(Checkpoint, layout_has_the_documented_groups) {
  save_checkpoint(path("c.h5"), sample_checkpoint());
  H5File f = H5File::open(path("c.h5"));
  std::vector<std::string> top;
  for (const H5Entry& e : f.walk("/"))
    if (e.path.find('/') == std::string::npos) top.push_back(e.path + (e.is_group ? "/" : ""));
  EXPECT_EQ(top, (std::vector<std::string>{"model/", "optimizer/", "trainer/", "rng/", "data/"}));
  EXPECT_TRUE(f.is_dataset("/model/transformer.h.0.attn.c_attn.weight"));
  EXPECT_TRUE(f.is_group("/optimizer/transformer.h.0.attn.c_attn.weight"));
  for (std::string s : {"m", "v", "master"})
    EXPECT_TRUE(f.is_dataset("/optimizer/transformer.h.0.attn.c_attn.weight/" + s)) << s;
  EXPECT_TRUE(f.is_dataset("/trainer/loss_window"));
  EXPECT_EQ(f.attr_int("/trainer", "step"), 500);
  EXPECT_EQ(f.attr_uint("/rng/dropout", "seed"), 1234u);
  EXPECT_EQ(f.attr_int("/data", "position"), 123456789);
  EXPECT_EQ(f.attr_string("/", "config"), long_yaml());
  EXPECT_EQ(f.attr_string("/", "format"), "tessera-checkpoint");
  EXPECT_EQ(f.attr_int("/", "format_version"), 1);
}

TEST_F(Checkpoint, the_same_state_saves_to_the_same_bytes) {
  CheckpointData ck = sample_checkpoint();
  save_checkpoint(path("a.h5"), ck);
  save_checkpoint(path("b.h5"), ck);
  EXPECT_EQ(file_bytes(path("a.h5")), file_bytes(path("b.h5")));  // no timestamps in the file
}

TEST_F(Checkpoint, load_model_into_fills_parameters_in_place) {
  CheckpointData ck = sample_checkpoint();
  save_checkpoint(path("c.h5"), ck);
  std::vector<std::pair<std::string, Tensor>> params;
  std::vector<void*> where;
  for (const auto& [name, t] : ck.model) {  // a different order than saved is fine
    params.insert(params.begin(), {name, zeros(t.shape(), t.dtype())});
    where.insert(where.begin(), params.front().second.data_ptr());
  }
  load_model_into(path("c.h5"), params);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, t] = params[i];
    EXPECT_EQ(t.data_ptr(), where[i]) << name;  // same storage: the model sees the weights
    for (const auto& [saved_name, saved] : ck.model)
      if (saved_name == name) expect_same_tensor(t, saved, name);
  }
}

TEST_F(Checkpoint, load_model_into_converts_to_the_parameter_dtype) {
  CheckpointData ck;
  ck.model.emplace_back("w", from_vector<float>({1.0f, 2.5f, -3.0f}, {3}));
  save_checkpoint(path("c.h5"), ck);
  std::vector<std::pair<std::string, Tensor>> params = {{"w", zeros({3}, DType::BF16)}};
  load_model_into(path("c.h5"), params);
  EXPECT_EQ(params[0].second.dtype(), DType::BF16);
  EXPECT_EQ(params[0].second.to(DType::F32).to_vector<float>(),
            (std::vector<float>{1.0f, 2.5f, -3.0f}));
}

TEST_F(Checkpoint, load_model_into_names_each_mismatch_and_leaves_the_model_untouched) {
  const std::string file = path("c.h5");
  CheckpointData ck;
  ck.model.emplace_back("transformer.wte.weight", ones({5, 4}));
  ck.model.emplace_back("transformer.h.0.mlp.c_fc.weight", ones({16, 4}));
  save_checkpoint(file, ck);
  auto model = [] {
    return std::vector<std::pair<std::string, Tensor>>{
        {"transformer.wte.weight", zeros({5, 4})},
        {"transformer.h.0.mlp.c_fc.weight", zeros({16, 4})}};
  };
  auto expect_untouched = [](const std::vector<std::pair<std::string, Tensor>>& params) {
    for (const auto& [name, t] : params)
      EXPECT_EQ(t.to_vector<float>(), std::vector<float>(size_t(t.numel()), 0.0f)) << name;
  };

  auto wrong_shape = model();
  wrong_shape[1].second = zeros({4, 16});
  std::string msg = error_of([&] { load_model_into(file, wrong_shape); });
  expect_mentions(msg, {"transformer.h.0.mlp.c_fc.weight", file, "(16, 4)", "(4, 16)"});
  expect_untouched(wrong_shape);  // wte was fine, but nothing is loaded before all is checked

  auto missing = model();
  missing.emplace_back("lm_head.weight", zeros({5, 4}));
  msg = error_of([&] { load_model_into(file, missing); });
  expect_mentions(msg, {"missing parameter 'lm_head.weight'", file, "(5, 4)"});
  expect_untouched(missing);

  auto extra = model();
  extra.pop_back();
  msg = error_of([&] { load_model_into(file, extra); });
  expect_mentions(msg, {"unexpected parameter 'transformer.h.0.mlp.c_fc.weight'", file, "(16, 4)"});
  expect_untouched(extra);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  // A wrong architecture: the first 8 problems are named and the rest counted, in one line.
  auto many = [&](int missing_count) {
    auto params = model();
    for (int i = 0; i < missing_count; ++i)
      params.emplace_back("extra." + std::to_string(i), zeros({1}));
    return error_of([&] { load_model_into(file, params); });
  };
  msg = many(8);
  expect_mentions(msg, {"'extra.0'", "'extra.7'"});
  EXPECT_EQ(msg.find(" more"), std::string::npos) << msg;
  msg = many(9);
  expect_mentions(msg, {"'extra.7'", "; and 1 more"});
  EXPECT_EQ(msg.find("'extra.8'"), std::string::npos) << msg;
}

// ---- corrupt input ----

TEST_F(Checkpoint, truncated_checkpoint_error_names_the_file) {
  const std::string file = path("step_00000500.h5");
  save_checkpoint(file, sample_checkpoint());
  fs::resize_file(file, fs::file_size(file) / 2);
  ::testing::internal::CaptureStderr();
  std::string msg = error_of([&] { load_checkpoint(file); });
  std::string msg2 = error_of([&] { load_model_into(file, {}); });
  std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  EXPECT_NE(msg2.find(file), std::string::npos) << msg2;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_EQ(printed, "") << "HDF5 printed its own error stack";
}

TEST_F(Checkpoint, non_hdf5_file_error_names_the_file) {
  const std::string file = path("garbage.h5");
  {
    std::ofstream out(file, std::ios::binary);
    for (int i = 0; i < 1000; ++i) out << "not an HDF5 file ";
  }
  ::testing::internal::CaptureStderr();
  std::string msg = error_of([&] { load_checkpoint(file); });
  std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  EXPECT_NE(msg.find("not an HDF5 file (no HDF5 signature"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // No digest file, but not HDF5 either: the one error, without the warning that the file cannot
  // be verified (no HDF5 error stack either).
  EXPECT_EQ(printed, "");
  std::ofstream(path("empty.h5")).close();
  for (const std::string& other : {path("empty.h5"), std::string("/dev/null")}) {
    ::testing::internal::CaptureStderr();
    msg = error_of([&] { load_checkpoint(other); });
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "") << other;
    EXPECT_NE(msg.find("cannot open checkpoint " + other), std::string::npos) << msg;
  }
  EXPECT_NE(
      error_of([&] { load_checkpoint(path("empty.h5")); }).find("not an HDF5 file (it is empty)"),
      std::string::npos);
  EXPECT_NE(error_of([&] { load_checkpoint("/dev/null"); }).find("not a regular file"),
            std::string::npos);

  msg = error_of([&] { load_checkpoint(path("absent.h5")); });
  EXPECT_NE(msg.find(path("absent.h5")), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
  msg = error_of([&] { load_checkpoint(dir_.string()); });
  EXPECT_NE(msg.find("directory"), std::string::npos) << msg;
}

TEST_F(Checkpoint, missing_group_error_names_the_group_and_the_file) {
  const std::string file = path("partial.h5");
  {
    H5File f = H5File::create(file);
    f.create_group("/model");
    f.set_attr_string("/", "config", "");
    f.close();
  }
  ::testing::internal::CaptureStderr();  // files made by hand have no digest file: warned about
  std::string msg = error_of([&] { load_checkpoint(file); });
  EXPECT_NE(msg.find("/optimizer"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  load_model_into(file, {});  // weights-only loading needs /model alone

  const std::string no_model = path("no_model.h5");
  H5File::create(no_model).close();
  msg = error_of([&] { load_model_into(no_model, {}); });
  EXPECT_NE(msg.find("checkpoint " + no_model + " has no group /model"), std::string::npos) << msg;
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("cannot be verified"), std::string::npos);
}

// A file that says it is something else is refused by that attribute, whatever else it holds; one
// whose /rng holds other than one group per generator, by the object that does not belong.
TEST_F(Checkpoint, a_file_of_another_format_or_rng_layout_is_refused_naming_what_differs) {
  auto make = [&](const std::string& name, const std::function<void(H5File&)>& mark) {
    const std::string file = path(name);
    H5File f = H5File::create(file);
    for (const char* g : {"/model", "/optimizer", "/trainer", "/rng", "/data"}) f.create_group(g);
    f.set_attr_string("/", "config", "");
    mark(f);
    f.close();
    return file;
  };
  ::testing::internal::CaptureStderr();  // files made by hand have no digest file: warned about
  for (const std::string& file :
       {make("other.h5", [](H5File& f) { f.set_attr_string("/", "format", "other-checkpoint"); }),
        make("number.h5", [](H5File& f) { f.set_attr_int("/", "format", 1); })}) {
    const std::string msg = error_of([&] { load_checkpoint(file); });
    EXPECT_NE(msg.find(file + " is not a tessera checkpoint (root attribute format is not "
                              "'tessera-checkpoint')"),
              std::string::npos)
        << msg;
  }
  const std::string newer = make("newer.h5", [](H5File& f) {
    f.set_attr_string("/", "format", "tessera-checkpoint");
    f.set_attr_int("/", "format_version", 2);
  });
  const std::string msg = error_of([&] { load_checkpoint(newer); });
  EXPECT_NE(msg.find("has format_version 2; this build reads up to 1"), std::string::npos) << msg;
  // Without the attributes (tessera's first files), the layout alone decides.
  EXPECT_NO_THROW(load_checkpoint(make("plain.h5", [](H5File&) {})));
  // /rng holds one group per generator, each with its seed and offset: nothing else.
  auto generator = [](H5File& f, const std::string& g) {
    f.create_group(g);
    f.set_attr_uint(g, "seed", 1);
    f.set_attr_uint(g, "offset", 2);
  };
  for (const std::string object : {"/rng/dropout", "/rng/a/b"}) {
    const std::string file = make("rng" + std::to_string(object.size()) + ".h5", [&](H5File& f) {
      if (object == "/rng/dropout") {
        write_tensor(f, object, zeros({1}));
      } else {
        generator(f, "/rng/a");
        generator(f, object);
      }
    });
    const std::string msg = error_of([&] { load_checkpoint(file); });
    EXPECT_NE(msg.find("unexpected object " + object + " (expected one group per generator)"),
              std::string::npos)
        << msg;
  }
  ::testing::internal::GetCapturedStderr();
}

// ---- atomic commit ----

TEST_F(Checkpoint, failed_save_keeps_the_previous_checkpoint_and_leaves_no_tmp) {
  const std::string file = path("step_00000500.h5");
  CheckpointData good = sample_checkpoint();
  save_checkpoint(file, good);
  const std::vector<uint8_t> before = file_bytes(file);

  // Caught before any file is touched.
  CheckpointData undefined_tensor = sample_checkpoint();
  undefined_tensor.model.emplace_back("transformer.h.1.ln_1.weight", Tensor());
  std::string msg = error_of([&] { save_checkpoint(file, undefined_tensor); });
  EXPECT_NE(msg.find("transformer.h.1.ln_1.weight"), std::string::npos) << msg;
  EXPECT_EQ(file_bytes(file), before);
  EXPECT_FALSE(fs::exists(file + ".tmp"));

  // Fails inside HDF5 halfway through writing the tmp ("w" is a dataset, "w/m" needs it a group).
  CheckpointData conflict = sample_checkpoint();
  conflict.optimizer.emplace_back("w", zeros({1}));
  conflict.optimizer.emplace_back("w/m", zeros({1}));
  msg = error_of([&] { save_checkpoint(file, conflict); });
  EXPECT_NE(msg.find("/optimizer/w"), std::string::npos) << msg;
  EXPECT_EQ(file_bytes(file), before);
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  expect_same_checkpoint(load_checkpoint(file), good);

  // The directory listing holds exactly the good checkpoint and its digest file.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step_00000500.h5", "step_00000500.h5.sha256"}));
}

// Names become HDF5 paths: a component HDF5 would read another way (empty, '.', '..') is refused
// by the name's kind before any file is touched, wherever it stands in the name; values stored as
// attributes take no '/' at all.
TEST_F(Checkpoint, bad_names_are_refused_by_kind_before_any_file_is_touched) {
  const std::string file = path("step_00000500.h5");
  auto refused = [&](CheckpointData ck, const std::string& what, const std::string& name) {
    const std::string msg = error_of([&] { save_checkpoint(file, ck); });
    EXPECT_NE(msg.find("bad " + what + " name '" + name + "' ("), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(file)) << name;
    EXPECT_FALSE(fs::exists(file + ".tmp")) << name;
  };
  for (std::string bad : {"", ".", "..", "/w", "w/", "a//b", "a/./b", "a/../b", "a/b/.",
                          "a/b/..", "a/b//c"}) {
    SCOPED_TRACE("'" + bad + "'");
    CheckpointData ck;
    ck.model.emplace_back(bad, zeros({1}));
    refused(ck, "model parameter", bad);
    ck = {};
    ck.optimizer.emplace_back(bad, zeros({1}));
    refused(ck, "optimizer state", bad);
    ck = {};
    ck.optimizer_sources.emplace_back(bad, [] { return zeros({1}); });
    refused(ck, "optimizer state", bad);
    ck = {};
    ck.trainer_tensors.emplace_back(bad, zeros({1}));
    refused(ck, "trainer tensor", bad);
  }
  for (std::string bad : {"", ".", "..", "a/b", "/a"}) {
    SCOPED_TRACE("'" + bad + "'");
    CheckpointData ck;
    ck.trainer_ints[bad] = 1;
    refused(ck, "trainer value", bad);
    ck = {};
    ck.trainer_floats[bad] = 1.0;
    refused(ck, "trainer value", bad);
    ck = {};
    ck.rng[bad] = RngState{1, 2};
    refused(ck, "rng", bad);
    ck = {};
    ck.data[bad] = 1;
    refused(ck, "data value", bad);
    ck = {};
    ck.adapter[bad] = "x";
    refused(ck, "adapter value", bad);
  }
  // A name twice, a value both int and float, a state without its source.
  auto twice = [&](const std::string& what, auto member) {
    CheckpointData ck;
    (ck.*member).emplace_back("w", zeros({1}));
    (ck.*member).emplace_back("v", zeros({1}));
    (ck.*member).emplace_back("w", zeros({1}));
    const std::string msg = error_of([&] { save_checkpoint(file, ck); });
    EXPECT_NE(msg.find(": " + what + " 'w' appears twice"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(file + ".tmp"));
  };
  twice("model parameter", &CheckpointData::model);
  twice("optimizer state", &CheckpointData::optimizer);
  twice("trainer tensor", &CheckpointData::trainer_tensors);
  CheckpointData both;
  both.trainer_ints["lr"] = 1;
  both.trainer_floats["lr"] = 1.0;
  std::string msg = error_of([&] { save_checkpoint(file, both); });
  EXPECT_NE(msg.find("trainer value 'lr' is both an int and a float"), std::string::npos) << msg;
  CheckpointData sourceless;
  sourceless.optimizer_sources.emplace_back("w/m", nullptr);
  msg = error_of([&] { save_checkpoint(file, sourceless); });
  EXPECT_NE(msg.find("optimizer state 'w/m' has no source"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(file));

  // Dots inside a component are a name like any other.
  CheckpointData ok;
  ok.model.emplace_back("a.b/..c/d..", zeros({1}));
  ok.trainer_ints["x.y"] = 1;
  save_checkpoint(file, ok);
  EXPECT_EQ(load_checkpoint(file).model.at(0).first, "a.b/..c/d..");
}

// A save that fails at one of its renames takes back what it committed: the digest file that
// names the new bytes goes (it would make a file of that name fail verification), and no .tmp is
// left. Each rename is made to fail by a directory, with something in it, at its target.
TEST_F(Checkpoint, a_save_whose_rename_fails_leaves_no_digest_file_or_tmp) {
  const std::string file = path("step_00000500.h5");
  auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    return names;
  };
  // The digest file's rename: its name is taken.
  fs::create_directories(digest_path(file) + "/x");
  std::string msg = error_of([&] { save_checkpoint(file, sample_checkpoint()); });
  EXPECT_NE(msg.find("cannot rename " + digest_path(file) + ".tmp to " + digest_path(file)),
            std::string::npos)
      << msg;
  EXPECT_EQ(listing(), std::vector<std::string>{"step_00000500.h5.sha256"});  // the directory
  fs::remove_all(digest_path(file));
  // The checkpoint's rename, after the digest file was committed.
  fs::create_directories(file + "/x");
  msg = error_of([&] { save_checkpoint(file, sample_checkpoint()); });
  EXPECT_NE(msg.find("cannot rename " + file + ".tmp to " + file), std::string::npos) << msg;
  EXPECT_EQ(listing(), std::vector<std::string>{"step_00000500.h5"});
}

TEST_F(Checkpoint, attributes_alone_are_read_without_the_tensors) {
  const std::string file = path("step_00000500.h5");
  save_checkpoint(file, sample_checkpoint());
  CheckpointData ck = load_checkpoint_attributes(file);
  EXPECT_TRUE(ck.model.empty() && ck.optimizer.empty() && ck.trainer_tensors.empty());
  CheckpointData all = load_checkpoint(file);
  all.model.clear(), all.optimizer.clear(), all.trainer_tensors.clear();
  expect_same_checkpoint(ck, all);
  // The reader that keeps the file open for the model's load holds the same.
  CheckpointReader reader(file);
  expect_same_checkpoint(reader.attributes(), all);
}

// A save that runs out of space part way is an error naming the file, and the process then exits
// normally: the file whose close failed used to stay registered with HDF5, whose exit-time cleanup
// then crashed on it. The file size limit (RLIMIT_FSIZE) stands in for a full disk: writes past it
// fail (EFBIG) as they would with ENOSPC, after the first ones went through. Runs in the child of
// EXPECT_EXIT; exits 0 when all went as it should.
[[noreturn]] void save_past_the_file_size_limit(const std::string& file) {
  signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails instead of ending the process
  const struct rlimit limit = {1 << 20, 1 << 20};
  setrlimit(RLIMIT_FSIZE, &limit);
  CheckpointData ck = sample_checkpoint();
  for (int i = 0; i < 8; ++i)
    ck.optimizer.emplace_back("big" + std::to_string(i) + "/m", zeros({256, 256}));
  int status = 2;  // no error
  try {
    save_checkpoint(file, ck);
  } catch (const Error& e) {
    const std::string msg = e.what();
    std::fprintf(stderr, "%s\n", msg.c_str());
    // The file driver's reason is cut to the C library's message: not its whole call
    // ("file write failed: time = ..., errno = 27, error message = 'File too large', buf = ...").
    const bool expected = msg.find(file) != std::string::npos &&
                          msg.find(" failed: File too large") != std::string::npos &&
                          msg.find("errno") == std::string::npos && !fs::exists(file + ".tmp");
    status = expected ? 0 : 3;
  }
  // std::exit runs no destructor of this process's test fixture: its directory goes here.
  fs::remove_all(fs::path(file).parent_path());
  std::exit(status);
}

TEST_F(Checkpoint, a_save_that_runs_out_of_space_leaves_a_clean_exit) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: HDF5 set up from scratch
  EXPECT_EXIT(save_past_the_file_size_limit(path("step_00000500.h5")), ::testing::ExitedWithCode(0),
              "");
}

TEST_F(Checkpoint, save_replaces_a_stale_tmp_left_by_a_crash) {
  const std::string file = path("c.h5");
  { std::ofstream(file + ".tmp") << "half a checkpoint from a crashed run"; }
  save_checkpoint(file, sample_checkpoint());
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  expect_same_checkpoint(load_checkpoint(file), sample_checkpoint());
}

TEST_F(Checkpoint, save_into_a_missing_directory_names_the_path) {
  const std::string file = path("no/such/dir/c.h5");
  std::string msg = error_of([&] { save_checkpoint(file, sample_checkpoint()); });
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
}
