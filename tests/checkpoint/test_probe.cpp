// The probe's child reads contiguous datasets by their two ends and every other layout whole
// (checkpoint/probe.cpp): damage to where a dataset's bytes lie must be refused by the child,
// naming the file and the dataset, before the loader reads a byte of them.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/probe.h"
#include "checkpoint/sidecar.h"
#include "checkpoint_fixture.h"
#include "core/tensor.h"
#include "test_util.h"

using namespace tessera;
using tessera::testing::error_of;
using tessera::testing::expect_mentions;
using tessera::testing::read_file;
namespace fs = std::filesystem;

namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The offsets in `bytes` where the 8-byte little-endian address `addr` is written.
std::vector<size_t> places_of(const std::string& bytes, uint64_t addr) {
  char key[8];
  for (int i = 0; i < 8; ++i) key[i] = char(addr >> (8 * i));
  std::vector<size_t> at;
  for (size_t i = 0; i + 8 <= bytes.size(); ++i)
    if (std::memcmp(bytes.data() + i, key, 8) == 0) at.push_back(i);
  return at;
}

// `bytes` with the address at `at` replaced by `addr`, written to `path` with a digest file that
// matches (one rewritten after the damage: only the probe stands between HDF5 and the damage).
void write_moved(const std::string& path, std::string bytes, size_t at, uint64_t addr) {
  for (int i = 0; i < 8; ++i) bytes[at + size_t(i)] = char(addr >> (8 * i));
  write_bytes(path, bytes);
  write_bytes(digest_path(path), digest_file_text(path, fs::path(path).filename().string()));
}

}  // namespace

// A contiguous dataset whose bytes start inside the file but end past it: its first element reads,
// its last does not. The child reads both ends, so the file is refused there; the loader would
// otherwise get the run's head and whatever lies past the end of the file.
TEST(Probe, a_contiguous_dataset_that_runs_past_the_end_of_the_file_is_refused_naming_it) {
  tessera::testing::TempDir tmp("tessera_probe");
  const std::string file = tmp.file("moved.h5");
  Generator g(5);
  CheckpointData ck;
  ck.model.emplace_back("transformer.wte.weight", randn({64, 32}, g));  // 8 KB of f32
  ck.model.emplace_back("transformer.ln_f.weight", randn({32}, g));
  ck.trainer_ints["step"] = 1;
  ck.config_yaml = "model:\n  n_layer: 1\n";
  save_checkpoint(file, ck);
  EXPECT_NO_THROW(probe_hdf5_file(file, 0, true));

  const std::string dataset = "/model/transformer.wte.weight";
  haddr_t addr = HADDR_UNDEF;
  H5O_info_t header{};
  {
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
    ASSERT_GE(d, 0);
    addr = H5Dget_offset(d);
    ASSERT_GE(H5Oget_info2(d, &header, H5O_INFO_BASIC | H5O_INFO_HDR), 0);
    H5Dclose(d);
    H5Fclose(f);
  }
  ASSERT_NE(addr, HADDR_UNDEF) << "the dataset is not contiguous";
  const std::string good = read_file(file);
  // The layout message (version 3, class 1: contiguous) holds the address; it is in the dataset's
  // object header.
  std::vector<size_t> at;
  for (size_t i : places_of(good, addr))
    if (i >= header.addr + 2 && i + 8 <= header.addr + header.hdr.space.total && good[i - 2] == 3 &&
        good[i - 1] == 1)
      at.push_back(i);
  ASSERT_EQ(at.size(), 1u) << "the layout message's address is not unique in the object header";

  // 256 bytes before the end: the first 64 elements lie in the file, the other 1984 past it.
  write_moved(file, good, at[0], good.size() - 256);
  const std::string msg = error_of([&] { probe_hdf5_file(file, 0, true); });
  expect_mentions(msg, {file, "its HDF5 structure is damaged", dataset});
  expect_mentions(error_of([&] { load_checkpoint(file); }), {file, dataset});
}

// A chunked dataset keeps its chunks' addresses in a B-tree: metadata, so the child reads every
// chunk. A middle chunk moved past the end of the file (neither end of the dataset is in it)
// must be refused by the child as well.
TEST(Probe, a_chunked_dataset_is_read_whole_so_a_moved_middle_chunk_is_refused) {
  tessera::testing::TempDir tmp("tessera_probe");
  const std::string file = tmp.file("chunked.h5");
  const hsize_t n = 4096, chunk = 1024;
  std::vector<float> values(n);
  for (hsize_t i = 0; i < n; ++i) values[i] = float(i);
  {
    const hid_t f = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    ASSERT_GE(H5Pset_chunk(dcpl, 1, &chunk), 0);
    const hid_t d = H5Dcreate2(f, "/values", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ASSERT_GE(d, 0);
    ASSERT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(f);
  }
  EXPECT_NO_THROW(probe_hdf5_file(file, 0, true));

  haddr_t addr = HADDR_UNDEF;
  {
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "/values", H5P_DEFAULT);
    const hid_t space = H5Dget_space(d);
    hsize_t offset[1];
    unsigned mask = 0;
    hsize_t size = 0;
    ASSERT_GE(H5Dget_chunk_info(d, space, 1, offset, &mask, &addr, &size), 0);  // the second of 4
    EXPECT_EQ(offset[0], chunk);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
  }
  const std::string good = read_file(file);
  const std::vector<size_t> at = places_of(good, addr);
  ASSERT_EQ(at.size(), 1u) << "the chunk's address is not unique in the file";

  write_moved(file, good, at[0], good.size() + 4096);
  expect_mentions(error_of([&] { probe_hdf5_file(file, 0, true); }),
                  {file, "its HDF5 structure is damaged", "/values"});
}
