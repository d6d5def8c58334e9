// The HDF5 wrapper on files written by other tools: datasets of types tessera does not write are
// classified by class, size and sign (never taken for a type of the same size), and big-endian
// data reads in the host's order.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <chrono>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/h5.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::TempDir;

namespace {

// One dataset of n elements of file type `type`, written from memory of type `mem`.
void write_raw(hid_t file, const char* name, hid_t type, hid_t mem, const void* data, hsize_t n) {
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(d, 0) << name;
  EXPECT_GE(H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0) << name;
  H5Dclose(d);
  H5Sclose(space);
}

TEST(H5File, types_from_other_writers_are_classified_by_class_size_and_sign) {
  TempDir dir;
  const std::string file = (dir.path / "foreign.h5").string();
  hdf5_init();
  {
    const hid_t f = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0) << file;
    const uint64_t u[2] = {1, 2};
    const int64_t i[2] = {-1, 2};
    const float x[2] = {1.5f, -2.0f};
    write_raw(f, "u32", H5T_STD_U32LE, H5T_NATIVE_UINT64, u, 2);
    write_raw(f, "i16", H5T_STD_I16LE, H5T_NATIVE_INT64, i, 2);
    write_raw(f, "i8", H5T_STD_I8LE, H5T_NATIVE_INT64, i, 2);
    write_raw(f, "u64", H5T_STD_U64LE, H5T_NATIVE_UINT64, u, 2);
    write_raw(f, "i64be", H5T_STD_I64BE, H5T_NATIVE_INT64, i, 2);
    write_raw(f, "u16be", H5T_STD_U16BE, H5T_NATIVE_UINT64, u, 2);
    write_raw(f, "f32be", H5T_IEEE_F32BE, H5T_NATIVE_FLOAT, x, 2);
    // IEEE half precision (1 sign, 5 exponent, 10 mantissa bits), which this HDF5 has no constant
    // for: what numpy's float16 writes through h5py.
    const hid_t half = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(half, 15, 10, 5, 0, 10);
    H5Tset_size(half, 2);
    H5Tset_ebias(half, 15);
    write_raw(f, "f16", half, H5T_NATIVE_FLOAT, x, 2);
    H5Tclose(half);
    const hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 4);
    write_raw(f, "str", str, str, "abcdefgh", 2);
    H5Tclose(str);
    ASSERT_GE(H5Fclose(f), 0);
  }
  H5File f = H5File::open(file);
  struct Want {
    const char* name;
    H5Elem elem;
    const char* desc;
  };
  for (const Want& w : {Want{"/u32", H5Elem::Other, "32-bit unsigned integer"},
                        Want{"/i16", H5Elem::Other, "16-bit signed integer"},
                        Want{"/i8", H5Elem::Other, "8-bit signed integer"},
                        Want{"/u64", H5Elem::U64, "u64"},
                        Want{"/i64be", H5Elem::I64, "i64"},
                        Want{"/u16be", H5Elem::U16, "u16"},
                        Want{"/f32be", H5Elem::F32, "f32"},
                        Want{"/f16", H5Elem::Other, "16-bit float"},
                        Want{"/str", H5Elem::Other, "string"}}) {
    const H5DatasetInfo info = f.dataset_info(w.name);
    EXPECT_EQ(info.elem, w.elem) << w.name << ": " << info.type_desc;
    EXPECT_EQ(info.type_desc, w.desc) << w.name;
    EXPECT_EQ(info.shape, Shape{2}) << w.name;
  }
  // Big-endian data arrives in the host's order.
  std::vector<float> x(2);
  f.read_dataset("/f32be", H5Elem::F32, x.data());
  EXPECT_EQ(x, (std::vector<float>{1.5f, -2.0f}));
  std::vector<int64_t> i(2);
  f.read_dataset("/i64be", H5Elem::I64, i.data());
  EXPECT_EQ(i, (std::vector<int64_t>{-1, 2}));
  // A type tessera does not read is refused by name, not converted.
  const std::string msg = error_of([&] { read_tensor(f, "/u32"); });
  EXPECT_NE(msg.find("32-bit unsigned integer"), std::string::npos) << msg;
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
}

// Misuse is refused naming the object and the file, before HDF5 sees it: a missing dataset, a
// group read as a dataset, a group below a dataset, a dataset written twice, and any call on a
// closed file.
TEST(H5File, misuse_is_refused_naming_the_object_and_the_file) {
  TempDir dir;
  const std::string file = (dir.path / "t.h5").string();
  H5File f = H5File::create(file);
  const float v[2] = {1, 2};
  f.write_dataset("/g/d", H5Elem::F32, {2}, v);
  auto refused = [&](const std::function<void()>& call, const std::string& want) {
    const std::string msg = error_of(call);
    EXPECT_NE(msg.find(want), std::string::npos) << "expected '" << want << "' in: " << msg;
  };
  refused([&] { f.dataset_info("/nope"); }, "no dataset /nope in " + file);
  refused([&] { f.dataset_info("/g"); }, "/g in " + file + " is not a dataset");
  refused([&] { f.create_group("/g/d/x"); },
          "cannot create group /g/d/x in " + file + ": /g/d exists and is not a group");
  refused([&] { f.write_dataset("/g/d", H5Elem::F32, {2}, v); }, "it already exists");
  refused([&] { f.walk("/g/d"); }, "no group /g/d in " + file);
  refused([&] { f.has_attr("/nope", "a"); }, "no object /nope in " + file);
  f.close();
  float out[2];
  const std::vector<std::function<void()>> calls = {
      [&] { f.exists("/g"); },
      [&] { f.is_group("/g"); },
      [&] { f.is_dataset("/g/d"); },
      [&] { f.create_group("/h"); },
      [&] { f.walk("/"); },
      [&] { f.write_dataset("/e", H5Elem::F32, {2}, v); },
      [&] { f.dataset_info("/g/d"); },
      [&] { f.read_dataset("/g/d", H5Elem::F32, out); },
      [&] { f.has_attr("/", "a"); },
      [&] { f.attr_names("/"); },
      [&] { f.attr_kind("/", "a"); },
      [&] { f.set_attr_int("/", "a", 1); },
      [&] { f.set_attr_uint("/", "a", 1); },
      [&] { f.set_attr_float("/", "a", 1.0); },
      [&] { f.set_attr_string("/", "a", "x"); },
      [&] { f.attr_int("/", "a"); },
      [&] { f.attr_uint("/", "a"); },
      [&] { f.attr_float("/", "a"); },
      [&] { f.attr_string("/", "a"); },
  };
  for (const auto& call : calls) refused(call, "HDF5 file " + file + " is closed");
}

// Object headers carry no timestamps: the same contents written a second apart are the same bytes
// (so a checkpoint's digest depends on its state alone).
TEST(H5File, the_same_contents_written_later_are_the_same_bytes) {
  TempDir dir;
  auto write = [&](const std::string& name) {
    const std::string file = (dir.path / name).string();
    H5File f = H5File::create(file);
    const float v[3] = {1, 2, 3};
    f.write_dataset("/model/layer.0/w", H5Elem::F32, {3}, v);
    f.set_attr_string("/", "config", "n_layer: 1");
    f.close();
    return tessera::testing::read_file(file);
  };
  const std::string first = write("a.h5");
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // HDF5's times are in seconds
  EXPECT_TRUE(first == write("b.h5"));
}

// A fixed-length string attribute of `size` bytes with the given padding, as h5py and other
// writers lay it down.
void write_fixed_string(hid_t obj, const char* name, const std::string& bytes, H5T_str_t pad) {
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, bytes.size());
  H5Tset_strpad(type, pad);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(a, 0) << name;
  EXPECT_GE(H5Awrite(a, type, bytes.data()), 0) << name;
  H5Aclose(a);
  H5Sclose(space);
  H5Tclose(type);
}

// Integers at the edge of what the other sign holds, the wrong kind, arrays, fixed-length strings
// of every padding, and the character set tessera's own strings declare.
TEST(H5File, attributes_at_the_edges_and_from_other_writers) {
  TempDir dir;
  const std::string file = (dir.path / "attrs.h5").string();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  {
    H5File f = H5File::create(file);
    f.set_attr_uint("/", "u_fits", uint64_t(kMax));
    f.set_attr_uint("/", "u_over", uint64_t(kMax) + 1);
    f.set_attr_int("/", "zero", 0);
    f.set_attr_float("/", "half", 0.5);
    f.set_attr_string("/", "text", "caf\xc3\xa9");
    f.close();
  }
  {
    hdf5_init();
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0) << file;
    write_fixed_string(f, "space_padded", "a b  ", H5T_STR_SPACEPAD);
    write_fixed_string(f, "nul_padded", std::string("a b\0\0", 5), H5T_STR_NULLPAD);
    write_fixed_string(f, "nul_terminated", std::string("a b\0", 4), H5T_STR_NULLTERM);
    const hsize_t two = 2;
    const hid_t space = H5Screate_simple(1, &two, nullptr);
    const hid_t a = H5Acreate2(f, "pair", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    const int64_t v[2] = {1, 2};
    EXPECT_GE(H5Awrite(a, H5T_NATIVE_INT64, v), 0);
    H5Aclose(a);
    H5Sclose(space);
    ASSERT_GE(H5Fclose(f), 0);
  }
  H5File f = H5File::open(file);
  EXPECT_EQ(f.attr_int("/", "u_fits"), kMax);
  std::string msg = error_of([&] { f.attr_int("/", "u_over"); });
  EXPECT_NE(msg.find("attribute 'u_over' of / in " + file + " = 9223372036854775808 does not fit"),
            std::string::npos)
      << msg;
  EXPECT_EQ(f.attr_uint("/", "zero"), 0u);
  for (const auto& read : std::vector<std::function<void()>>{[&] { f.attr_int("/", "half"); },
                                                              [&] { f.attr_uint("/", "half"); }}) {
    msg = error_of(read);
    EXPECT_NE(msg.find("attribute 'half' of / in " + file + " is a float, expected an integer"),
              std::string::npos)
        << msg;
  }
  msg = error_of([&] { f.attr_int("/", "pair"); });
  EXPECT_NE(msg.find("attribute 'pair' of / in " + file + " holds 2 values, expected one"),
            std::string::npos)
      << msg;
  EXPECT_EQ(f.attr_string("/", "space_padded"), "a b");
  EXPECT_EQ(f.attr_string("/", "nul_padded"), "a b");
  EXPECT_EQ(f.attr_string("/", "nul_terminated"), "a b");
  EXPECT_EQ(f.attr_string("/", "text"), "caf\xc3\xa9");
  f.close();
  // Declared UTF-8, so h5py reads it back as text rather than bytes.
  const hid_t raw = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(raw, 0) << file;
  const hid_t a = H5Aopen_by_name(raw, "/", "text", H5P_DEFAULT, H5P_DEFAULT);
  const hid_t type = H5Aget_type(a);
  EXPECT_EQ(H5Tget_cset(type), H5T_CSET_UTF8);
  H5Tclose(type);
  H5Aclose(a);
  H5Fclose(raw);
}

}  // namespace
