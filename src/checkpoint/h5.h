// A small RAII wrapper over the HDF5 C API: one file, groups by path, raw datasets and scalar
// attributes. Every HDF5 call is checked; a failure throws tessera::Error naming the file, the
// object path and HDF5's own innermost reason ("file signature not found", "truncated file: eof =
// ..."), on one line. HDF5's habit of printing its error stack to stderr is switched off.
//
//   H5File f = H5File::create("/tmp/x.h5");                     // truncates
//   f.create_group("/model/transformer.h.0");                   // parents too, like mkdir -p
//   f.write_dataset("/model/w", H5Elem::F32, {2, 3}, ptr);      // dots in names are fine
//   f.set_attr_string("/", "config", yaml_text);
//   f.close();                                                  // checked; the destructor is not
//   H5File g = H5File::open("/tmp/x.h5");
//   H5DatasetInfo info = g.dataset_info("/model/w");            // {F32, (2, 3)}
//
// Object paths are absolute ("/a/b.c/d"); each '/'-separated component is one link name, so a
// Hugging Face parameter name such as "transformer.h.0.attn.c_attn.weight" is a single dataset, not
// a chain of groups. Empty components, "." and ".." are rejected rather than silently collapsed by
// HDF5's path parser. Groups track link creation order, so listing a group written here returns
// its children in the order they were written (files from elsewhere list in name order).
//
// hid_t is HDF5's int64_t; this header keeps <hdf5.h> (and its macros) out of the code that
// includes it, the training loop among them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera {

// Element types of datasets: the file stores them little-endian (H5T_IEEE_F32LE, H5T_STD_I32LE,
// ...) and reads convert to the host's native order. Other: anything else found in a file.
enum class H5Elem { F32, F64, I32, U8, U16, I64, U64, Other };
const char* h5_elem_name(H5Elem e);

struct H5DatasetInfo {
  H5Elem elem = H5Elem::Other;
  Shape shape;             // () for a scalar dataspace
  std::string type_desc;   // "f32", ..., or HDF5's class and size for Other ("16-bit float")
};

// What an attribute holds, as far as reading it goes.
enum class H5AttrKind { Int, Float, String, Other };

// One object found by H5File::walk: its path relative to the walked group, and whether it is a
// group (else a dataset; named datatypes and soft links are skipped).
struct H5Entry {
  std::string path;
  bool is_group = false;
};

// Sets up the HDF5 library for this process (once, before its first use) and switches off its
// error printing for the calling thread. Every H5File entry point calls it; code that calls HDF5
// without an H5File calls it first.
void hdf5_init();
// The innermost reason on the calling thread's HDF5 error stack ("file signature not found"), on
// one line; clears the stack. Call right after the failing HDF5 call.
std::string hdf5_reason();

class H5File {
 public:
  enum class Mode { Read, ReadWrite };

  static H5File create(const std::string& path);  // a new file; an existing one is truncated
  static H5File open(const std::string& path, Mode mode = Mode::Read);

  H5File() = default;
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();  // closes quietly; call close() to see errors (a failed flush loses data)

  void close();  // flushes and closes; the file is complete on disk (but not fsynced) afterwards
  bool is_open() const { return id_ >= 0; }
  const std::string& path() const { return path_; }

  // ---- objects ----
  bool exists(const std::string& obj) const;  // a link at every component of obj
  bool is_group(const std::string& obj) const;
  bool is_dataset(const std::string& obj) const;
  void create_group(const std::string& group);  // missing parents are created; existing is fine
  // Every group and dataset below group, parents before children, each group's links in creation
  // order where tracked (else by name).
  std::vector<H5Entry> walk(const std::string& group) const;

  // ---- datasets: contiguous, uncompressed; data is shape_numel(shape) packed elements ----
  void write_dataset(const std::string& path, H5Elem elem, const Shape& shape, const void* data);
  H5DatasetInfo dataset_info(const std::string& path) const;
  void read_dataset(const std::string& path, H5Elem elem, void* data) const;

  // ---- attributes of a group or dataset ("/" is the root); set_* replaces an existing one ----
  bool has_attr(const std::string& obj, const std::string& name) const;
  std::vector<std::string> attr_names(const std::string& obj) const;  // in name order
  H5AttrKind attr_kind(const std::string& obj, const std::string& name) const;
  void set_attr_int(const std::string& obj, const std::string& name, int64_t value);
  void set_attr_uint(const std::string& obj, const std::string& name, uint64_t value);
  void set_attr_float(const std::string& obj, const std::string& name, double value);
  // Variable-length UTF-8: no size limit (the text lives in the global heap, not the header).
  void set_attr_string(const std::string& obj, const std::string& name, const std::string& value);
  int64_t attr_int(const std::string& obj, const std::string& name) const;
  uint64_t attr_uint(const std::string& obj, const std::string& name) const;
  double attr_float(const std::string& obj, const std::string& name) const;
  // Reads variable-length and fixed-length strings (h5py writes either).
  std::string attr_string(const std::string& obj, const std::string& name) const;

 private:
  H5File(int64_t id, std::string path) : id_(id), path_(std::move(path)) {}
  int64_t id_ = -1;  // hid_t
  std::string path_;
};

}  // namespace tessera
