#include "checkpoint/h5.h"

#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "checkpoint/h5_owned.h"

static_assert(std::is_same_v<hid_t, int64_t>, "h5.h stores hid_t as int64_t (HDF5 >= 1.10)");

namespace tessera {
namespace {

herr_t innermost_error(unsigned, const H5E_error2_t* err, void* out) {
  auto* reason = static_cast<std::string*>(out);
  if (reason->empty() && err->desc && *err->desc) *reason = err->desc;
  return 0;
}

}  // namespace

void hdf5_init() {
  // HDF5 registers an atexit handler (H5_term_library) when it initialises, which closes every
  // file still open at exit. A file whose H5Fclose failed (its flush hit ENOSPC) stays registered,
  // half torn down, and that exit-time close segfaults on it (in H5F__close_cb): a clean "No space
  // left on device" error would end in a crash. Every file here is closed by H5File (or its
  // destructor) before exit, so the handler has nothing else to do: it is never registered. That
  // takes H5dont_atexit before the library's first initialisation, hence here, on the one path
  // every HDF5 call of tessera takes.
  static std::once_flag once;
  std::call_once(once, [] {
    H5dont_atexit();
    H5open();
  });
  // HDF5 prints its whole error stack to stderr by default, so every failure would be reported
  // twice (once by the library, once by our exception). In a thread-safe build (Debian's is) the
  // setting is per thread, hence thread_local.
  thread_local bool quiet = false;
  if (!quiet) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    quiet = true;
  }
}

// The most specific entry of the current thread's error stack ("file signature not found"), which
// is what a user can act on; the outer entries only say "unable to open file" at each level. Must
// be read right after the failing call: the next API call clears the stack.
std::string hdf5_reason() {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, &reason);
  H5Eclear2(H5E_DEFAULT);
  for (char& c : reason)
    if (c == '\n' || c == '\r') c = ' ';  // errors are one line
  // The file driver's read and write failures spell out their whole call ("file write failed:
  // time = ..., filename = ..., errno = 28, error message = 'No space left on device', buf = 0x...,
  // bytes actually written = 18446744073709551615, ..."): the C library's message is what a user
  // acts on, and the file is named by the caller.
  const std::string tag = "error message = '";
  if (const size_t m = reason.find(tag), colon = reason.find(':');
      m != std::string::npos && colon != std::string::npos && colon < m) {
    const size_t end = reason.find('\'', m + tag.size());
    if (end != std::string::npos)
      reason = reason.substr(0, colon) + ": " + reason.substr(m + tag.size(), end - m - tag.size());
  }
  return reason.empty() ? "unknown HDF5 error" : reason;
}

}  // namespace tessera

// Checks an HDF5 call (negative hid_t / herr_t / htri_t is failure) and returns its result.
#define H5_CHECK(call, ...)                                                       \
  [&] {                                                                           \
    auto h5_ret_ = (call);                                                        \
    if (h5_ret_ < 0) {                                                            \
      std::string h5_why_ = ::tessera::hdf5_reason();                             \
      ::tessera::detail::fail(__FILE__, __LINE__, __VA_ARGS__, ": ", h5_why_);    \
    }                                                                             \
    return h5_ret_;                                                               \
  }()

namespace tessera {
namespace {

// Object paths: absolute, '/'-separated, no empty / "." / ".." components. HDF5 itself would read
// "a//b" as "a/b" and "a/./b" as "a/b", so a typo would silently name a different object.
std::vector<std::string> split_path(const std::string& obj, const std::string& file) {
  TESSERA_CHECK(!obj.empty() && obj[0] == '/', "HDF5 object path '", obj, "' in ", file,
                " must start with '/'");
  std::vector<std::string> parts;
  if (obj == "/") return parts;
  size_t start = 1;
  while (true) {
    size_t end = obj.find('/', start);
    std::string part = obj.substr(start, end == std::string::npos ? end : end - start);
    TESSERA_CHECK(!part.empty() && part != "." && part != "..", "bad HDF5 object path '", obj,
                  "' in ", file, ": empty, '.' or '..' component");
    parts.push_back(std::move(part));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return parts;
}

std::string join_path(const std::vector<std::string>& parts, size_t n) {
  if (n == 0) return "/";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += "/" + parts[i];
  return s;
}

std::string child_path(const std::string& parent, const std::string& name) {
  return parent == "/" ? "/" + name : parent + "/" + name;
}

hid_t file_type_of(H5Elem e) {
  switch (e) {
    case H5Elem::F32: return H5T_IEEE_F32LE;
    case H5Elem::F64: return H5T_IEEE_F64LE;
    case H5Elem::I32: return H5T_STD_I32LE;
    case H5Elem::U8: return H5T_STD_U8LE;
    case H5Elem::U16: return H5T_STD_U16LE;
    case H5Elem::I64: return H5T_STD_I64LE;
    case H5Elem::U64: return H5T_STD_U64LE;
    case H5Elem::Other: break;
  }
  TESSERA_FAIL("no HDF5 type for element type ", h5_elem_name(e));
}

hid_t native_type_of(H5Elem e) {
  switch (e) {
    case H5Elem::F32: return H5T_NATIVE_FLOAT;
    case H5Elem::F64: return H5T_NATIVE_DOUBLE;
    case H5Elem::I32: return H5T_NATIVE_INT32;
    case H5Elem::U8: return H5T_NATIVE_UINT8;
    case H5Elem::U16: return H5T_NATIVE_UINT16;
    case H5Elem::I64: return H5T_NATIVE_INT64;
    case H5Elem::U64: return H5T_NATIVE_UINT64;
    case H5Elem::Other: break;
  }
  TESSERA_FAIL("no HDF5 type for element type ", h5_elem_name(e));
}

// Classifies a stored type by class, size and sign; byte order is HDF5's business on read.
std::pair<H5Elem, std::string> classify(hid_t type) {
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  std::string bits = std::to_string(size * 8) + "-bit ";
  if (cls == H5T_FLOAT) {
    if (size == 4) return {H5Elem::F32, "f32"};
    if (size == 8) return {H5Elem::F64, "f64"};
    return {H5Elem::Other, bits + "float"};
  }
  if (cls == H5T_INTEGER) {
    bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (is_signed && size == 4) return {H5Elem::I32, "i32"};
    if (is_signed && size == 8) return {H5Elem::I64, "i64"};
    if (!is_signed && size == 1) return {H5Elem::U8, "u8"};
    if (!is_signed && size == 2) return {H5Elem::U16, "u16"};
    if (!is_signed && size == 8) return {H5Elem::U64, "u64"};
    return {H5Elem::Other, bits + (is_signed ? "signed" : "unsigned") + " integer"};
  }
  switch (cls) {
    case H5T_STRING: return {H5Elem::Other, "string"};
    case H5T_COMPOUND: return {H5Elem::Other, "compound"};
    case H5T_ENUM: return {H5Elem::Other, "enum"};
    case H5T_ARRAY: return {H5Elem::Other, "array"};
    case H5T_VLEN: return {H5Elem::Other, "variable-length sequence"};
    default: return {H5Elem::Other, "unsupported HDF5 type class " + std::to_string(int(cls))};
  }
}

// Link creation order tracked and indexed: listing a group then returns what was written, in the
// order it was written (parameter order is the model's, not alphabetical).
constexpr unsigned kCreationOrder = H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED;

}  // namespace

const char* h5_elem_name(H5Elem e) {
  switch (e) {
    case H5Elem::F32: return "f32";
    case H5Elem::F64: return "f64";
    case H5Elem::I32: return "i32";
    case H5Elem::U8: return "u8";
    case H5Elem::U16: return "u16";
    case H5Elem::I64: return "i64";
    case H5Elem::U64: return "u64";
    case H5Elem::Other: return "other";
  }
  return "?";
}

// ---- file ----

namespace {

H5Owned file_access_plist(const std::string& path) {
  H5Owned fapl(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate for ", path), H5Pclose);
  // STRONG: closing the file closes any object still open in it, so after H5Fclose returns the
  // file is really closed and complete, which the fsync-and-rename of a checkpoint relies on.
  H5_CHECK(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "H5Pset_fclose_degree for ", path);
#if H5_VERSION_GE(1, 10, 7)
  // Checkpoints are written under a temporary name and renamed, so readers never see a file being
  // written and HDF5's flock buys nothing; on NFS/Lustre, where flock often fails, it would only
  // make opening fail.
  H5_CHECK(H5Pset_file_locking(fapl.get(), false, true), "H5Pset_file_locking for ", path);
#endif
  return fapl;
}

}  // namespace

H5File H5File::create(const std::string& path) {
  hdf5_init();
  H5Owned fcpl(H5_CHECK(H5Pcreate(H5P_FILE_CREATE), "H5Pcreate for ", path), H5Pclose);
  H5_CHECK(H5Pset_link_creation_order(fcpl.get(), kCreationOrder), "creation order for ", path);
  // The library's default (earliest) file format, not H5Pset_libver_bounds(V18 or later) with its
  // checksummed superblock and object headers: measured on tessera checkpoints with single flipped
  // bytes in their last 12 KiB (HDF5 1.10.8), both formats crashed the library on 29 of 150, since
  // the crashes come from its group iteration and error paths, and link names sit in fractal heap
  // blocks that carry no checksum either way. What keeps damage from HDF5 is the digest file
  // (sidecar.h) and, for a file without one, the child-process probe (probe.h); a new format would
  // change the bytes of every checkpoint for nothing.
  H5Owned fapl = file_access_plist(path);
  hid_t id = H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()),
                      "cannot create HDF5 file ", path);
  return H5File(id, path);
}

H5File H5File::open(const std::string& path, Mode mode) {
  hdf5_init();
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  TESSERA_CHECK(std::filesystem::exists(status), "cannot open HDF5 file ", path,
                ": no such file");
  TESSERA_CHECK(!std::filesystem::is_directory(status), "cannot open HDF5 file ", path,
                ": is a directory");
  H5Owned fapl = file_access_plist(path);
  unsigned flags = mode == Mode::ReadWrite ? H5F_ACC_RDWR : H5F_ACC_RDONLY;
  hid_t id = H5_CHECK(H5Fopen(path.c_str(), flags, fapl.get()), "cannot open HDF5 file ", path,
                      " (truncated, corrupt or not HDF5)");
  return H5File(id, path);
}

H5File::H5File(H5File&& other) noexcept
    : id_(std::exchange(other.id_, -1)), path_(std::move(other.path_)) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = std::exchange(other.id_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

H5File::~H5File() {
  if (id_ >= 0) {
    H5Fclose(id_);
    H5Eclear2(H5E_DEFAULT);
  }
}

void H5File::close() {
  if (id_ < 0) return;
  hid_t id = std::exchange(id_, -1);
  H5_CHECK(H5Fclose(id), "cannot close (flush) HDF5 file ", path_);
}

// ---- objects ----

namespace {

// The kind of the object at obj (H5I_GROUP, H5I_DATASET, ...), or H5I_BADID when nothing is there.
H5I_type_t object_kind(hid_t file, const std::string& obj, const std::string& path) {
  std::vector<std::string> parts = split_path(obj, path);
  // H5Lexists fails (rather than answering false) when a parent is missing, so walk down one link
  // at a time; a dataset in the middle of the path also means "not there".
  for (size_t n = 1; n <= parts.size(); ++n) {
    std::string prefix = join_path(parts, n);
    htri_t there = H5_CHECK(H5Lexists(file, prefix.c_str(), H5P_DEFAULT), "looking up ", prefix,
                            " in ", path);
    if (!there) return H5I_BADID;
    if (n < parts.size()) {
      H5Owned o(H5Oopen(file, prefix.c_str(), H5P_DEFAULT), H5Oclose);
      if (o.get() < 0) {
        H5Eclear2(H5E_DEFAULT);  // a dangling soft link: not an object
        return H5I_BADID;
      }
      if (H5Iget_type(o.get()) != H5I_GROUP) return H5I_BADID;
    }
  }
  H5Owned o(H5Oopen(file, obj.c_str(), H5P_DEFAULT), H5Oclose);
  if (o.get() < 0) {
    H5Eclear2(H5E_DEFAULT);
    return H5I_BADID;
  }
  return H5Iget_type(o.get());
}

H5Owned open_object(hid_t file, const std::string& obj, const std::string& path) {
  TESSERA_CHECK(object_kind(file, obj, path) != H5I_BADID, "no object ", obj, " in ", path);
  return H5Owned(
      H5_CHECK(H5Oopen(file, obj.c_str(), H5P_DEFAULT), "cannot open ", obj, " in ", path),
      H5Oclose);
}

H5Owned open_dataset(hid_t file, const std::string& obj, const std::string& path) {
  H5I_type_t kind = object_kind(file, obj, path);
  TESSERA_CHECK(kind != H5I_BADID, "no dataset ", obj, " in ", path);
  TESSERA_CHECK(kind == H5I_DATASET, obj, " in ", path, " is not a dataset");
  return H5Owned(
      H5_CHECK(H5Dopen2(file, obj.c_str(), H5P_DEFAULT), "cannot open dataset ", obj, " in ", path),
      H5Dclose);
}

struct LinkList {
  std::vector<std::string> names;
};

herr_t collect_hard_link(hid_t, const char* name, const H5L_info_t* info, void* out) {
  if (info->type == H5L_TYPE_HARD) static_cast<LinkList*>(out)->names.emplace_back(name);
  return 0;
}

void walk_group(hid_t file, const std::string& path, const std::string& abs,
                const std::string& rel, std::vector<H5Entry>& out) {
  H5Owned g(
      H5_CHECK(H5Gopen2(file, abs.c_str(), H5P_DEFAULT), "cannot open group ", abs, " in ", path),
      H5Gclose);
  H5Owned gcpl(H5_CHECK(H5Gget_create_plist(g.get()), "H5Gget_create_plist of ", abs, " in ", path),
               H5Pclose);
  unsigned order_flags = 0;
  H5_CHECK(H5Pget_link_creation_order(gcpl.get(), &order_flags), "creation order of ", abs, " in ",
           path);
  H5_index_t index = (order_flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  LinkList links;
  hsize_t idx = 0;
  H5_CHECK(H5Literate(g.get(), index, H5_ITER_INC, &idx, collect_hard_link, &links),
           "cannot list group ", abs, " in ", path);
  for (const std::string& name : links.names) {
    std::string child_abs = child_path(abs, name);
    std::string child_rel = rel.empty() ? name : rel + "/" + name;
    H5Owned o(H5_CHECK(H5Oopen(g.get(), name.c_str(), H5P_DEFAULT), "cannot open ", child_abs,
                       " in ", path),
              H5Oclose);
    H5I_type_t kind = H5Iget_type(o.get());
    if (kind == H5I_GROUP) {
      out.push_back({child_rel, true});
      walk_group(file, path, child_abs, child_rel, out);
    } else if (kind == H5I_DATASET) {
      out.push_back({child_rel, false});
    }
  }
}

}  // namespace

bool H5File::exists(const std::string& obj) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  return object_kind(id_, obj, path_) != H5I_BADID;
}

bool H5File::is_group(const std::string& obj) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  return object_kind(id_, obj, path_) == H5I_GROUP;
}

bool H5File::is_dataset(const std::string& obj) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  return object_kind(id_, obj, path_) == H5I_DATASET;
}

void H5File::create_group(const std::string& group) {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  std::vector<std::string> parts = split_path(group, path_);
  H5Owned gcpl(H5_CHECK(H5Pcreate(H5P_GROUP_CREATE), "H5Pcreate for ", path_), H5Pclose);
  H5_CHECK(H5Pset_link_creation_order(gcpl.get(), kCreationOrder), "creation order for ", path_);
  // No timestamps in object headers: the same state then gives the same bytes on disk.
  H5_CHECK(H5Pset_obj_track_times(gcpl.get(), false), "H5Pset_obj_track_times for ", path_);
  for (size_t n = 1; n <= parts.size(); ++n) {
    std::string prefix = join_path(parts, n);
    H5I_type_t kind = object_kind(id_, prefix, path_);
    if (kind == H5I_GROUP) continue;
    TESSERA_CHECK(kind == H5I_BADID, "cannot create group ", group, " in ", path_, ": ", prefix,
                  " exists and is not a group");
    H5Owned g(H5_CHECK(H5Gcreate2(id_, prefix.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
                       "cannot create group ", prefix, " in ", path_),
              H5Gclose);
  }
}

std::vector<H5Entry> H5File::walk(const std::string& group) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  TESSERA_CHECK(is_group(group), "no group ", group, " in ", path_);
  std::vector<H5Entry> out;
  walk_group(id_, path_, group, "", out);
  return out;
}

// ---- datasets ----

void H5File::write_dataset(const std::string& obj, H5Elem elem, const Shape& shape,
                           const void* data) {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  std::vector<std::string> parts = split_path(obj, path_);
  TESSERA_CHECK(!parts.empty(), "cannot write a dataset at the root of ", path_);
  create_group(join_path(parts, parts.size() - 1));
  TESSERA_CHECK(!exists(obj), "cannot write dataset ", obj, " in ", path_, ": it already exists");

  std::vector<hsize_t> dims(shape.begin(), shape.end());
  for (int64_t d : shape)
    TESSERA_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape), " of ", obj);
  H5Owned space(H5_CHECK(shape.empty() ? H5Screate(H5S_SCALAR)
                                       : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                         "cannot make dataspace ", shape_str(shape), " for ", obj, " in ", path_),
                H5Sclose);
  H5Owned dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate for ", path_), H5Pclose);
  H5_CHECK(H5Pset_obj_track_times(dcpl.get(), false), "H5Pset_obj_track_times for ", path_);
  H5Owned ds(H5_CHECK(H5Dcreate2(id_, obj.c_str(), file_type_of(elem), space.get(), H5P_DEFAULT,
                                 dcpl.get(), H5P_DEFAULT),
                      "cannot create dataset ", obj, " in ", path_),
             H5Dclose);
  // An empty tensor may have no buffer, and H5Dwrite rejects a null one even for zero elements.
  if (shape_numel(shape) == 0) return;
  H5_CHECK(H5Dwrite(ds.get(), native_type_of(elem), H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
           "cannot write dataset ", obj, " in ", path_);
}

H5DatasetInfo H5File::dataset_info(const std::string& obj) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  H5Owned ds = open_dataset(id_, obj, path_);
  H5Owned type(H5_CHECK(H5Dget_type(ds.get()), "type of ", obj, " in ", path_), H5Tclose);
  H5Owned space(H5_CHECK(H5Dget_space(ds.get()), "dataspace of ", obj, " in ", path_), H5Sclose);
  H5DatasetInfo info;
  std::tie(info.elem, info.type_desc) = classify(type.get());
  H5S_class_t cls = H5Sget_simple_extent_type(space.get());
  TESSERA_CHECK(cls == H5S_SCALAR || cls == H5S_SIMPLE, "dataset ", obj, " in ", path_,
                " has a null dataspace (no elements, no shape)");
  if (cls == H5S_SIMPLE) {
    int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()), "rank of ", obj, " in ", path_);
    std::vector<hsize_t> dims(size_t(rank), 0);
    H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), "shape of ", obj, " in ",
             path_);
    info.shape.assign(dims.begin(), dims.end());
  }
  return info;
}

void H5File::read_dataset(const std::string& obj, H5Elem elem, void* data) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  H5Owned ds = open_dataset(id_, obj, path_);
  H5Owned space(H5_CHECK(H5Dget_space(ds.get()), "dataspace of ", obj, " in ", path_), H5Sclose);
  hssize_t n = H5_CHECK(H5Sget_simple_extent_npoints(space.get()), "size of ", obj, " in ", path_);
  if (n == 0) return;
  H5_CHECK(H5Dread(ds.get(), native_type_of(elem), H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
           "cannot read dataset ", obj, " in ", path_, " as ", h5_elem_name(elem));
}

// ---- attributes ----

namespace {

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

// A scalar attribute opened for reading: its type and a check that it holds exactly one value (an
// array attribute would overrun the one-value buffer we read into).
struct OpenAttr {
  H5Owned attr;
  H5Owned type;
};

OpenAttr open_attr(hid_t file, const std::string& obj, const std::string& name,
                   const std::string& path) {
  H5Owned o = open_object(file, obj, path);
  htri_t there = H5_CHECK(H5Aexists(o.get(), name.c_str()), "looking up attribute ", name, " of ",
                          obj, " in ", path);
  TESSERA_CHECK(there, "no attribute '", name, "' on ", obj, " in ", path);
  H5Owned a(H5_CHECK(H5Aopen(o.get(), name.c_str(), H5P_DEFAULT), "cannot open attribute ", name,
                     " of ", obj, " in ", path),
            H5Aclose);
  H5Owned space(
      H5_CHECK(H5Aget_space(a.get()), "dataspace of attribute ", name, " of ", obj, " in ", path),
      H5Sclose);
  hssize_t n = H5_CHECK(H5Sget_simple_extent_npoints(space.get()), "size of attribute ", name,
                        " of ", obj, " in ", path);
  TESSERA_CHECK(n == 1, "attribute '", name, "' of ", obj, " in ", path, " holds ", n,
                " values, expected one");
  H5Owned type(
      H5_CHECK(H5Aget_type(a.get()), "type of attribute ", name, " of ", obj, " in ", path),
      H5Tclose);
  return {std::move(a), std::move(type)};
}

void write_attr(hid_t file, const std::string& obj, const std::string& name, hid_t file_type,
                hid_t mem_type, const void* value, const std::string& path) {
  H5Owned o = open_object(file, obj, path);
  htri_t there = H5_CHECK(H5Aexists(o.get(), name.c_str()), "looking up attribute ", name, " of ",
                          obj, " in ", path);
  if (there)
    H5_CHECK(H5Adelete(o.get(), name.c_str()), "cannot replace attribute ", name, " of ", obj,
             " in ", path);
  H5Owned space(H5_CHECK(H5Screate(H5S_SCALAR), "H5Screate for ", path), H5Sclose);
  H5Owned a(
      H5_CHECK(H5Acreate2(o.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
               "cannot create attribute ", name, " of ", obj, " in ", path),
      H5Aclose);
  H5_CHECK(H5Awrite(a.get(), mem_type, value), "cannot write attribute ", name, " of ", obj, " in ",
           path);
}

const char* kind_name(H5AttrKind k) {
  switch (k) {
    case H5AttrKind::Int: return "an integer";
    case H5AttrKind::Float: return "a float";
    case H5AttrKind::String: return "a string";
    case H5AttrKind::Other: return "neither number nor string";
  }
  return "?";
}

H5AttrKind kind_of(hid_t type) {
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: return H5AttrKind::Int;
    case H5T_FLOAT: return H5AttrKind::Float;
    case H5T_STRING: return H5AttrKind::String;
    default: return H5AttrKind::Other;
  }
}

void expect_kind(const OpenAttr& a, H5AttrKind want, const std::string& obj,
                 const std::string& name, const std::string& path) {
  H5AttrKind got = kind_of(a.type.get());
  TESSERA_CHECK(got == want, "attribute '", name, "' of ", obj, " in ", path, " is ",
                kind_name(got), ", expected ", kind_name(want));
}

}  // namespace

bool H5File::has_attr(const std::string& obj, const std::string& name) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  H5Owned o = open_object(id_, obj, path_);
  return H5_CHECK(H5Aexists(o.get(), name.c_str()), "looking up attribute ", name, " of ", obj,
                  " in ", path_) > 0;
}

std::vector<std::string> H5File::attr_names(const std::string& obj) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  H5Owned o = open_object(id_, obj, path_);
  std::vector<std::string> names;
  hsize_t idx = 0;
  H5_CHECK(H5Aiterate2(o.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, &names),
           "cannot list attributes of ", obj, " in ", path_);
  return names;
}

H5AttrKind H5File::attr_kind(const std::string& obj, const std::string& name) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  return kind_of(open_attr(id_, obj, name, path_).type.get());
}

void H5File::set_attr_int(const std::string& obj, const std::string& name, int64_t value) {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  write_attr(id_, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, path_);
}

void H5File::set_attr_uint(const std::string& obj, const std::string& name, uint64_t value) {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  write_attr(id_, obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value, path_);
}

void H5File::set_attr_float(const std::string& obj, const std::string& name, double value) {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  write_attr(id_, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, path_);
}

void H5File::set_attr_string(const std::string& obj, const std::string& name,
                             const std::string& value) {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  // A C string is written: an embedded NUL would silently cut the text short.
  TESSERA_CHECK(value.find('\0') == std::string::npos, "attribute '", name, "' of ", obj, " in ",
                path_, ": string contains a NUL byte");
  H5Owned type(H5_CHECK(H5Tcopy(H5T_C_S1), "H5Tcopy for ", path_), H5Tclose);
  H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), "H5Tset_size for ", path_);
  H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), "H5Tset_cset for ", path_);
  const char* p = value.c_str();
  write_attr(id_, obj, name, type.get(), type.get(), &p, path_);
}

int64_t H5File::attr_int(const std::string& obj, const std::string& name) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  OpenAttr a = open_attr(id_, obj, name, path_);
  expect_kind(a, H5AttrKind::Int, obj, name, path_);
  // HDF5 clips out-of-range integers silently on conversion: read unsigned 64-bit as such, check.
  if (H5Tget_sign(a.type.get()) == H5T_SGN_NONE && H5Tget_size(a.type.get()) >= 8) {
    uint64_t u = 0;
    H5_CHECK(H5Aread(a.attr.get(), H5T_NATIVE_UINT64, &u), "cannot read attribute ", name, " of ",
             obj, " in ", path_);
    TESSERA_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), "attribute '", name, "' of ",
                  obj, " in ", path_, " = ", u, " does not fit in int64");
    return int64_t(u);
  }
  int64_t v = 0;
  H5_CHECK(H5Aread(a.attr.get(), H5T_NATIVE_INT64, &v), "cannot read attribute ", name, " of ",
           obj, " in ", path_);
  return v;
}

uint64_t H5File::attr_uint(const std::string& obj, const std::string& name) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  OpenAttr a = open_attr(id_, obj, name, path_);
  expect_kind(a, H5AttrKind::Int, obj, name, path_);
  if (H5Tget_sign(a.type.get()) == H5T_SGN_2) {
    int64_t v = 0;
    H5_CHECK(H5Aread(a.attr.get(), H5T_NATIVE_INT64, &v), "cannot read attribute ", name, " of ",
             obj, " in ", path_);
    TESSERA_CHECK(v >= 0, "attribute '", name, "' of ", obj, " in ", path_, " = ", v,
                  " is negative, expected an unsigned value");
    return uint64_t(v);
  }
  uint64_t u = 0;
  H5_CHECK(H5Aread(a.attr.get(), H5T_NATIVE_UINT64, &u), "cannot read attribute ", name, " of ",
           obj, " in ", path_);
  return u;
}

double H5File::attr_float(const std::string& obj, const std::string& name) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  OpenAttr a = open_attr(id_, obj, name, path_);
  expect_kind(a, H5AttrKind::Float, obj, name, path_);
  double v = 0;
  H5_CHECK(H5Aread(a.attr.get(), H5T_NATIVE_DOUBLE, &v), "cannot read attribute ", name, " of ",
           obj, " in ", path_);
  return v;
}

std::string H5File::attr_string(const std::string& obj, const std::string& name) const {
  TESSERA_CHECK(is_open(), "HDF5 file ", path_, " is closed");
  OpenAttr a = open_attr(id_, obj, name, path_);
  expect_kind(a, H5AttrKind::String, obj, name, path_);
  // Read with the stored type itself, so no character-set or padding conversion is involved.
  htri_t variable = H5_CHECK(H5Tis_variable_str(a.type.get()), "type of attribute ", name, " of ",
                             obj, " in ", path_);
  if (variable) {
    char* p = nullptr;
    H5_CHECK(H5Aread(a.attr.get(), a.type.get(), &p), "cannot read attribute ", name, " of ", obj,
             " in ", path_);
    std::string s = p ? p : "";
    H5free_memory(p);  // HDF5 allocated it; freeing with our free() is wrong on some platforms
    return s;
  }
  size_t size = H5Tget_size(a.type.get());
  std::string s(size, '\0');
  H5_CHECK(H5Aread(a.attr.get(), a.type.get(), s.data()), "cannot read attribute ", name, " of ",
           obj, " in ", path_);
  // Fixed-length strings are NUL-terminated, NUL-padded or space-padded to their size.
  s.resize(std::min(s.find('\0'), s.size()));
  if (H5Tget_strpad(a.type.get()) == H5T_STR_SPACEPAD)
    s.erase(s.find_last_not_of(' ') + 1);
  return s;
}

}  // namespace tessera
