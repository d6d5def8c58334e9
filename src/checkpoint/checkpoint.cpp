#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <future>
#include <map>
#include <set>

#include "checkpoint/digest.h"
#include "checkpoint/probe.h"
#include "checkpoint/retention.h"
#include "checkpoint/sidecar.h"
#include "core/text.h"

namespace tessera {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "tessera-checkpoint";
constexpr int64_t kFormatVersion = 1;
constexpr const char* kGroups[] = {"/model", "/optimizer", "/trainer", "/rng", "/data"};

H5Elem elem_of(DType t) {
  switch (t) {
    case DType::F32: return H5Elem::F32;
    case DType::F64: return H5Elem::F64;
    case DType::I32: return H5Elem::I32;
    case DType::U8: return H5Elem::U8;
    case DType::BF16: return H5Elem::U16;  // the raw bits; marked by the dtype attribute
  }
  return H5Elem::Other;
}

// Every dataset write_tensor writes carries the CRC-32C of its stored bytes in this attribute, and
// every read checks it. A digest attribute rather than HDF5's Fletcher-32 filter: the filter needs
// chunked storage and cannot apply to scalar datasets, so it would leave 0-d tensors unguarded and
// change every dataset's layout; an attribute guards all datasets alike, and h5py users can ignore
// it. CRC-32C detects every error burst up to 32 bits and any odd number of flipped bits, and its
// table-driven form runs at over a gigabyte per second, little next to reading the file.
constexpr const char* kCrcAttr = "crc32c";

// The file stores tensors little-endian and the CRC is of the stored bytes; the host's bytes are
// the same only on a little-endian host (every platform tessera builds for).
static_assert(std::endian::native == std::endian::little, "tensor checksums assume little-endian");

uint32_t crc_of(const Tensor& host_contiguous) {
  return host_contiguous.numel() ? crc32c(host_contiguous.data_ptr(), host_contiguous.nbytes()) : 0;
}

// Checks a tensor just read from path against the checksum stored beside it. Datasets without one
// (written before checksums, or by another tool) are not checked.
void check_crc(H5File& f, const std::string& path, const Tensor& host_contiguous) {
  if (!f.has_attr(path, kCrcAttr)) return;
  const uint64_t stored = f.attr_uint(path, kCrcAttr);
  const uint32_t computed = crc_of(host_contiguous);
  if (stored == computed) return;
  char detail[80];
  std::snprintf(detail, sizeof detail, "CRC-32C %08x, recorded %08llx", unsigned(computed),
                static_cast<unsigned long long>(stored));
  TESSERA_FAIL("checkpoint ", f.path(), ": tensor ", path, " does not match its checksum (",
               detail, "): the file is corrupt");
}

// The root attribute that carries the CRC-32C of the checkpoint's metadata: the config, the
// trainer numbers, the RNG and data states and the adapter description, serialised in one fixed
// order (metadata_bytes). The model is built from the config and the run continues from the rest,
// so a change to either is as wrong as a changed tensor; checked like the tensors' CRCs, and, like
// theirs, skipped when absent (files written before it).
constexpr const char* kMetaCrcAttr = "metadata_crc32c";

std::string metadata_bytes(const CheckpointData& ck) {
  std::string out;
  auto put = [&out](const std::string& field, const std::string& value) {
    out += field;
    out += '\0';
    out += std::to_string(value.size());
    out += '\0';
    out += value;
  };
  put("config", ck.config_yaml);
  for (const auto& [k, v] : ck.trainer_ints) put("trainer.i." + k, std::to_string(v));
  for (const auto& [k, v] : ck.trainer_floats) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    put("trainer.f." + k, std::to_string(bits));
  }
  for (const auto& [k, v] : ck.rng) put("rng." + k, std::to_string(v.seed) + "," + std::to_string(v.offset));
  for (const auto& [k, v] : ck.data) put("data." + k, std::to_string(v));
  for (const auto& [k, v] : ck.adapter) put("adapter." + k, v);
  return out;
}

uint32_t metadata_crc(const CheckpointData& ck) {
  const std::string bytes = metadata_bytes(ck);
  return crc32c(bytes.data(), bytes.size());
}

}  // namespace

// ---- tensors ----

void write_tensor(H5File& f, const std::string& path, const Tensor& t) {
  TESSERA_CHECK(t.defined(), "cannot write an undefined tensor to ", path, " in ", f.path());
  // HDF5 writes from a packed host buffer; anything else goes through one contiguous host copy.
  Tensor host = t;
  if (!t.device().is_cpu() || !t.is_contiguous()) {
    host = Tensor::empty(t.shape(), t.dtype());
    host.copy_(t);
  }
  f.write_dataset(path, elem_of(t.dtype()), t.shape(), t.numel() ? host.data_ptr() : nullptr);
  if (t.dtype() == DType::BF16) f.set_attr_string(path, "dtype", "bf16");
  f.set_attr_uint(path, kCrcAttr, crc_of(host));
}

std::pair<DType, Shape> tensor_info(H5File& f, const std::string& path) {
  H5DatasetInfo info = f.dataset_info(path);
  bool marked_bf16 = f.has_attr(path, "dtype") &&
                     f.attr_kind(path, "dtype") == H5AttrKind::String &&
                     f.attr_string(path, "dtype") == "bf16";
  TESSERA_CHECK(!marked_bf16 || info.elem == H5Elem::U16, "dataset ", path, " in ", f.path(),
                " is marked dtype = \"bf16\" but stores ", info.type_desc, ", not u16 bits");
  switch (info.elem) {
    case H5Elem::F32: return {DType::F32, info.shape};
    case H5Elem::F64: return {DType::F64, info.shape};
    case H5Elem::I32: return {DType::I32, info.shape};
    case H5Elem::U8: return {DType::U8, info.shape};
    case H5Elem::U16:
      if (marked_bf16) return {DType::BF16, info.shape};
      break;
    default: break;
  }
  TESSERA_FAIL("dataset ", path, " in ", f.path(), " stores ", info.type_desc,
               marked_bf16 ? "" : (info.elem == H5Elem::U16 ? " without dtype = \"bf16\"" : ""),
               "; tensors are f32, f64, i32, u8, or bf16 stored as u16 with dtype = \"bf16\"");
}

Tensor read_tensor(H5File& f, const std::string& path) {
  auto [dtype, shape] = tensor_info(f, path);
  Tensor t = Tensor::empty(shape, dtype);
  f.read_dataset(path, elem_of(dtype), t.numel() ? t.data_ptr() : nullptr);
  check_crc(f, path, t);
  return t;
}

void read_tensor_into(H5File& f, const std::string& path, Tensor& dst) {
  TESSERA_CHECK(dst.defined(), "cannot read ", path, " from ", f.path(),
                " into an undefined tensor");
  auto [dtype, shape] = tensor_info(f, path);
  TESSERA_CHECK(shape == dst.shape() && dtype == dst.dtype(), "cannot read ", path, " from ",
                f.path(), ": file has ", shape_str(shape), " ", dtype_name(dtype),
                ", destination has ", shape_str(dst.shape()), " ", dtype_name(dst.dtype()));
  if (dst.device().is_cpu() && dst.is_contiguous()) {
    f.read_dataset(path, elem_of(dtype), dst.numel() ? dst.data_ptr() : nullptr);
    check_crc(f, path, dst);
  } else {
    dst.copy_(read_tensor(f, path));
  }
}

// ---- durable file operations ----

namespace {

std::string errno_text() { return std::strerror(errno); }

// A digest file's whole text, or "" when there is no regular file of that name: a directory's
// ifstream would throw on the first read with an error that names nothing.
std::string digest_file_if_any(const std::string& sidecar) {
  std::error_code ec;
  std::string text;
  if (!fs::is_regular_file(sidecar, ec)) return text;
  if (std::ifstream in{sidecar, std::ios::binary})
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return text;
}

std::string parent_dir(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// Data written through HDF5 (or write()) sits in the page cache until the kernel decides to write
// it; a power loss after rename() could then leave a renamed but empty file.
void fsync_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TESSERA_CHECK(fd >= 0, "cannot open ", path, " to fsync it: ", errno_text());
  int rc = ::fsync(fd);
  std::string why = rc ? errno_text() : "";
  ::close(fd);
  TESSERA_CHECK(rc == 0, "cannot fsync ", path, ": ", why);
}

// The rename itself is an update of the directory, durable only once the directory is synced.
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TESSERA_CHECK(fd >= 0, "cannot open directory ", dir, " to fsync it: ", errno_text());
  int rc = ::fsync(fd);
  // Some filesystems cannot sync a directory (EINVAL); the rename is then as durable as they allow.
  std::string why = (rc && errno != EINVAL) ? errno_text() : "";
  ::close(fd);
  TESSERA_CHECK(why.empty(), "cannot fsync directory ", dir, ": ", why);
}

void rename_over(const std::string& from, const std::string& to) {
  TESSERA_CHECK(::rename(from.c_str(), to.c_str()) == 0, "cannot rename ", from, " to ", to, ": ",
                errno_text());
}

void write_all(const std::string& path, const std::string& content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TESSERA_CHECK(fd >= 0, "cannot create ", path, ": ", errno_text());
  size_t done = 0;
  std::string why;
  while (done < content.size() && why.empty()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno != EINTR) why = errno_text();
    if (n > 0) done += size_t(n);
  }
  if (why.empty() && ::fsync(fd) != 0) why = errno_text();
  if (::close(fd) != 0 && why.empty()) why = errno_text();
  TESSERA_CHECK(why.empty(), "cannot write ", path, ": ", why);
}

// ---- checkpoint layout ----

// Names become HDF5 paths below a group; reject what HDF5 would reinterpret or refuse, before any
// file is touched.
bool valid_name(const std::string& name, bool allow_slash) {
  size_t start = 0;
  while (true) {
    size_t end = name.find('/', start);
    std::string part = name.substr(start, end == std::string::npos ? end : end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == std::string::npos) return true;
    if (!allow_slash) return false;
    start = end + 1;
  }
}

void check_name(const std::string& what, const std::string& name, bool allow_slash,
                const std::string& path) {
  TESSERA_CHECK(valid_name(name, allow_slash), "cannot save checkpoint ", path, ": bad ", what,
                " name '", name, "'",
                allow_slash ? " (empty, '.' or '..' component)" : " (empty, '.', '..' or has '/')");
}

void check_tensors(const std::string& what,
                   const std::vector<std::pair<std::string, Tensor>>& tensors,
                   const std::string& path) {
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    check_name(what, name, true, path);
    TESSERA_CHECK(seen.insert(name).second, "cannot save checkpoint ", path, ": ", what, " '", name,
                  "' appears twice");
    TESSERA_CHECK(t.defined(), "cannot save checkpoint ", path, ": ", what, " '", name,
                  "' is an undefined tensor");
  }
}

void check_data(const CheckpointData& ck, const std::string& path) {
  check_tensors("model parameter", ck.model, path);
  check_tensors("optimizer state", ck.optimizer, path);
  for (const auto& [key, get] : ck.optimizer_sources) {
    check_name("optimizer state", key, true, path);
    TESSERA_CHECK(get, "cannot save checkpoint ", path, ": optimizer state '", key,
                  "' has no source");
  }
  check_tensors("trainer tensor", ck.trainer_tensors, path);
  for (const auto& [name, v] : ck.trainer_ints) {
    check_name("trainer value", name, false, path);
    TESSERA_CHECK(!ck.trainer_floats.count(name), "cannot save checkpoint ", path,
                  ": trainer value '", name, "' is both an int and a float");
  }
  for (const auto& [name, v] : ck.trainer_floats) check_name("trainer value", name, false, path);
  for (const auto& [name, v] : ck.rng) check_name("rng", name, false, path);
  for (const auto& [name, v] : ck.data) check_name("data value", name, false, path);
  for (const auto& [name, v] : ck.adapter) check_name("adapter value", name, false, path);
}

void write_checkpoint(H5File& f, const CheckpointData& ck) {
  f.set_attr_string("/", "format", kFormat);
  f.set_attr_int("/", "format_version", kFormatVersion);
  f.set_attr_string("/", "config", ck.config_yaml);
  for (const char* g : kGroups) f.create_group(g);  // present even when empty: load checks them
  for (const auto& [name, t] : ck.model) write_tensor(f, "/model/" + name, t);
  for (const auto& [key, t] : ck.optimizer) write_tensor(f, "/optimizer/" + key, t);
  for (const auto& [key, get] : ck.optimizer_sources) write_tensor(f, "/optimizer/" + key, get());
  for (const auto& [name, v] : ck.trainer_ints) f.set_attr_int("/trainer", name, v);
  for (const auto& [name, v] : ck.trainer_floats) f.set_attr_float("/trainer", name, v);
  for (const auto& [name, t] : ck.trainer_tensors) write_tensor(f, "/trainer/" + name, t);
  for (const auto& [name, s] : ck.rng) {
    std::string g = "/rng/" + name;
    f.create_group(g);
    f.set_attr_uint(g, "seed", s.seed);
    f.set_attr_uint(g, "offset", s.offset);
  }
  for (const auto& [name, v] : ck.data) f.set_attr_int("/data", name, v);
  if (!ck.adapter.empty()) f.create_group("/adapter");
  for (const auto& [name, v] : ck.adapter) f.set_attr_string("/adapter", name, v);
  f.set_attr_uint("/", kMetaCrcAttr, metadata_crc(ck));
}

// Every dataset below group, as (path relative to group, tensor), in the order written.
std::vector<std::pair<std::string, Tensor>> read_tensors(H5File& f, const std::string& group) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const H5Entry& e : f.walk(group))
    if (!e.is_group) out.emplace_back(e.path, read_tensor(f, group + "/" + e.path));
  return out;
}

void check_layout(H5File& f) {
  if (f.has_attr("/", "format")) {
    TESSERA_CHECK(f.attr_kind("/", "format") == H5AttrKind::String &&
                      f.attr_string("/", "format") == kFormat,
                  f.path(), " is not a tessera checkpoint (root attribute format is not '", kFormat,
                  "')");
  }
  if (f.has_attr("/", "format_version")) {
    int64_t v = f.attr_int("/", "format_version");
    TESSERA_CHECK(v <= kFormatVersion, "checkpoint ", f.path(), " has format_version ", v,
                  "; this build reads up to ", kFormatVersion);
  }
  for (const char* g : kGroups)
    TESSERA_CHECK(f.is_group(g), "checkpoint ", f.path(), " has no group ", g,
                  " (incomplete, or not a tessera checkpoint)");
}

std::string list_problems(const std::vector<std::string>& problems) {
  constexpr size_t kShown = 8;  // the error stays one readable line for a wrong architecture
  std::string s;
  for (size_t i = 0; i < problems.size() && i < kShown; ++i) s += (i ? "; " : "") + problems[i];
  if (problems.size() > kShown) s += "; and " + std::to_string(problems.size() - kShown) + " more";
  return s;
}

}  // namespace

// ---- checkpoints ----

// The digest file is committed before the checkpoint, each rename made durable before the next:
//   tmp written, fsynced -> digest of tmp -> <path>.sha256.tmp written, fsynced -> renamed to
//   <path>.sha256, dir fsynced -> tmp renamed to <path>, dir fsynced.
// So a checkpoint name never appears without the digest of its bytes. A crash between the two
// renames leaves the new digest file beside either nothing (no checkpoint of that name: nothing
// lists it, and the next save of that name replaces it) or the previous file of the same name (a
// rollback re-saves a step): that file then fails verification and is never loaded, and
// finish_interrupted_saves (--resume auto) completes the rename from the whole tmp. An
// error there (not a crash) puts the previous file's digest file back, so it stays verifiable.
void save_checkpoint(const std::string& path, const CheckpointData& ck) {
  check_data(ck, path);
  const std::string dir = parent_dir(path);
  TESSERA_CHECK(fs::is_directory(dir), "cannot save checkpoint ", path, ": directory ", dir,
                " does not exist");
  const std::string tmp = path + ".tmp", sidecar = digest_path(path);
  const std::string sidecar_tmp = sidecar + ".tmp", name = fs::path(path).filename().string();
  bool sidecar_committed = false;
  // Of a file of the same name (a step saved again), to put back. A directory of the digest file's
  // name holds none: the save then fails at the digest file's rename, naming both paths.
  const std::string previous_digest = digest_file_if_any(sidecar);
  try {
    H5File f = H5File::create(tmp);
    write_checkpoint(f, ck);
    f.close();
    // The digest is computed from the page cache while fsync writes the same pages to disk: the two
    // took 1.0 s and 0.6 s one after the other for a GPT-2 124M checkpoint with AdamW's state.
    // Unwinding out of here (fsync failed) waits for the digest's thread in the future's
    // destructor.
    std::future<std::string> digest =
        std::async(std::launch::async, [&tmp, &name] { return digest_file_text(tmp, name); });
    fsync_file(tmp);
    write_all(sidecar_tmp, digest.get());
    rename_over(sidecar_tmp, sidecar);
    sidecar_committed = true;
    fsync_dir(dir);
    rename_over(tmp, path);
  } catch (...) {
    // f is closed by now (it was destroyed leaving the try block); the previous <path> was never
    // touched, so removing the partial tmp loses nothing. A digest file committed for the tmp
    // would only make a previous <path> fail verification: it goes too.
    std::error_code ec;
    fs::remove(tmp, ec);
    fs::remove(sidecar_tmp, ec);
    if (sidecar_committed) {
      fs::remove(sidecar, ec);
      if (!previous_digest.empty() && fs::exists(path, ec)) try {
          write_all(sidecar_tmp, previous_digest);
          rename_over(sidecar_tmp, sidecar);
        } catch (...) {  // the file then loads unverified, with the warning that says so
          fs::remove(sidecar_tmp, ec);
        }
    }
    throw;
  }
  fsync_dir(dir);
}

std::vector<std::string> finish_interrupted_saves(const std::string& dir) {
  std::vector<std::string> finished;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return finished;
  std::vector<fs::path> tmps;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".tmp" && e.is_regular_file(ec)) tmps.push_back(e.path());
  std::sort(tmps.begin(), tmps.end());
  for (const fs::path& tmp : tmps) {
    const fs::path path = tmp.parent_path() / tmp.stem();  // step_00000020.h5
    const std::string sidecar = digest_path(path.string());
    if (path.extension() != ".h5") continue;
    const std::string committed = digest_file_if_any(sidecar);
    // The digest file names the checkpoint's final name; the text save_checkpoint wrote for these
    // bytes is what hashing them again gives (the same chunk size: the file's size picks it).
    if (committed.empty() || digest_file_text(tmp.string(), path.filename().string()) != committed)
      continue;  // a write that stopped before its digest file was committed: left to cleanup
    rename_over(tmp.string(), path.string());
    fsync_dir(dir);
    finished.push_back(path.string());
  }
  return finished;
}

namespace {

// Every checkpoint is opened for reading here: its bytes are checked against its digest file first,
// so a damaged file is refused before the HDF5 library parses any of it. A digest file rewritten
// after the damage matches damaged bytes, and HDF5 can crash on damaged metadata: so a child
// process reads the file's whole HDF5 structure first (probe.h; verify_checkpoint_file already
// did for a file without a digest file).
H5File open_checkpoint(const std::string& path) {
  if (verify_checkpoint_file(path) == FileCheck::Verified) probe_hdf5_file(path, 0, true);
  return H5File::open(path);
}

CheckpointData read_checkpoint(H5File& f, const std::string& path, bool tensors) {
  check_layout(f);
  CheckpointData ck;
  TESSERA_CHECK(f.has_attr("/", "config"), "checkpoint ", path,
                " has no root attribute config (the resolved YAML)");
  ck.config_yaml = f.attr_string("/", "config");
  if (tensors) {
    ck.model = read_tensors(f, "/model");
    ck.optimizer = read_tensors(f, "/optimizer");
    ck.trainer_tensors = read_tensors(f, "/trainer");
  }
  for (const std::string& name : f.attr_names("/trainer")) {
    H5AttrKind kind = f.attr_kind("/trainer", name);
    TESSERA_CHECK(kind == H5AttrKind::Int || kind == H5AttrKind::Float, "checkpoint ", path,
                  ": /trainer attribute '", name, "' is not a number");
    if (kind == H5AttrKind::Int) ck.trainer_ints[name] = f.attr_int("/trainer", name);
    else ck.trainer_floats[name] = f.attr_float("/trainer", name);
  }
  for (const H5Entry& e : f.walk("/rng")) {
    TESSERA_CHECK(e.is_group && e.path.find('/') == std::string::npos, "checkpoint ", path,
                  ": unexpected object /rng/", e.path, " (expected one group per generator)");
    std::string g = "/rng/" + e.path;
    ck.rng[e.path] = RngState{f.attr_uint(g, "seed"), f.attr_uint(g, "offset")};
  }
  for (const std::string& name : f.attr_names("/data")) ck.data[name] = f.attr_int("/data", name);
  if (f.is_group("/adapter"))
    for (const std::string& name : f.attr_names("/adapter"))
      ck.adapter[name] = f.attr_string("/adapter", name);
  if (f.has_attr("/", kMetaCrcAttr)) {
    const uint64_t stored = f.attr_uint("/", kMetaCrcAttr);
    const uint32_t computed = metadata_crc(ck);
    TESSERA_CHECK(stored == computed, "checkpoint ", path, ": its attributes (the config, trainer, "
                  "rng, data or adapter values) do not match their checksum (", kMetaCrcAttr,
                  "): the file is corrupt or was edited");
  }
  return ck;
}

CheckpointData read_checkpoint(const std::string& path, bool tensors) {
  H5File f = open_checkpoint(path);
  CheckpointData ck = read_checkpoint(f, path, tensors);
  f.close();
  return ck;
}

}  // namespace

CheckpointData load_checkpoint(const std::string& path) { return read_checkpoint(path, true); }

CheckpointData load_checkpoint_attributes(const std::string& path) {
  return read_checkpoint(path, false);
}

namespace {

// Checks every name and shape of `stored` against params (all problems in one error naming
// `path`), then fills each parameter with read(name, dst): nothing is written unless all fit.
void fill_model(const std::string& path, const std::map<std::string, Shape>& stored,
                const std::vector<std::pair<std::string, Tensor>>& params,
                const std::function<void(const std::string&, Tensor&)>& read) {
  std::vector<std::string> problems;
  std::set<std::string> in_model;
  for (const auto& [name, t] : params) {
    TESSERA_CHECK(t.defined(), "load_model_into ", path, ": parameter '", name,
                  "' is an undefined tensor");
    TESSERA_CHECK(in_model.insert(name).second, "load_model_into ", path, ": parameter '", name,
                  "' appears twice in the model");
    auto it = stored.find(name);
    if (it == stored.end()) {
      problems.push_back("missing parameter '" + name + "' (model has " + shape_str(t.shape()) +
                         ")");
    } else if (it->second != t.shape()) {
      problems.push_back("parameter '" + name + "': file has " + shape_str(it->second) +
                         ", model has " + shape_str(t.shape()));
    }
  }
  for (const auto& [name, shape] : stored)
    if (!in_model.count(name))
      problems.push_back("unexpected parameter '" + name + "' (file has " + shape_str(shape) +
                         ", not in the model)");
  TESSERA_CHECK(problems.empty(), "cannot load model from ", path, ": ", list_problems(problems));
  for (const auto& [name, t] : params) {
    Tensor dst = t;  // a handle on the same storage: writing through it fills the model
    read(name, dst);
  }
}

// /model of an open checkpoint into params (load_model_into's contract).
void read_model_into(H5File& f, const std::string& path,
                     const std::vector<std::pair<std::string, Tensor>>& params) {
  TESSERA_CHECK(f.is_group("/model"), "checkpoint ", path, " has no group /model");
  std::map<std::string, Shape> stored;
  for (const H5Entry& e : f.walk("/model"))
    if (!e.is_group) stored[e.path] = tensor_info(f, "/model/" + e.path).second;
  fill_model(path, stored, params, [&](const std::string& name, Tensor& dst) {
    const std::string obj = "/model/" + name;
    if (tensor_info(f, obj).first == dst.dtype()) read_tensor_into(f, obj, dst);
    else dst.copy_(read_tensor(f, obj));  // copy_ converts dtype
  });
}

}  // namespace

void load_model_into(const std::string& path,
                     const std::vector<std::pair<std::string, Tensor>>& params) {
  H5File f = open_checkpoint(path);  // /model alone: no other group is read or required
  read_model_into(f, path, params);
  f.close();
}

CheckpointReader::CheckpointReader(const std::string& path)
    : path_(path), file_(open_checkpoint(path)), attributes_(read_checkpoint(file_, path, false)) {}

void CheckpointReader::load_model_into(const std::vector<std::pair<std::string, Tensor>>& params) {
  read_model_into(file_, path_, params);
}

void load_model_into(const CheckpointData& ck, const std::string& path,
                     const std::vector<std::pair<std::string, Tensor>>& params) {
  std::map<std::string, const Tensor*> by_name;
  std::map<std::string, Shape> stored;
  for (const auto& [name, t] : ck.model) {
    by_name[name] = &t;
    stored[name] = t.shape();
  }
  fill_model(path, stored, params,
             [&](const std::string& name, Tensor& dst) { dst.copy_(*by_name.at(name)); });
}

// ---- the `latest` pointer ----

void write_latest(const std::string& dir, const std::string& filename) {
  TESSERA_CHECK(!filename.empty() && filename.find('\n') == std::string::npos &&
                    filename.find('\r') == std::string::npos,
                "write_latest: bad checkpoint file name '", filename, "' for ", dir);
  TESSERA_CHECK(fs::is_directory(dir), "write_latest: ", dir, " is not a directory");
  const std::string path = (fs::path(dir) / "latest").string();
  const std::string tmp = path + ".tmp";
  try {
    write_all(tmp, filename + "\n");
    rename_over(tmp, path);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  fsync_dir(dir);
}

namespace {

// What a `latest` file names, for an error message: binary garbage still gives one readable line.
std::string shown(const std::string& name) { return printable(name, true, 160); }

std::string follow_latest(const fs::path& latest) {
  std::ifstream in(latest, std::ios::binary);
  TESSERA_CHECK(in, "cannot read ", latest.string());
  // The first line; no file name is longer than this, and a file of garbage is not read whole.
  std::string name(4096, '\0');
  in.read(name.data(), std::streamsize(name.size()));
  TESSERA_CHECK(!in.bad(), "cannot read ", latest.string());
  name.resize(std::min(size_t(in.gcount()), name.find('\n')));
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ' || name.back() == '\t'))
    name.pop_back();
  TESSERA_CHECK(!name.empty(), latest.string(), " is empty (it should name a checkpoint file)");
  // A NUL would end the name the file system sees early, naming another file.
  TESSERA_CHECK(name.find('\0') == std::string::npos, latest.string(), " holds '", shown(name),
                "', which is not a file name (it has a NUL byte)");
  fs::path target = fs::path(name).is_absolute() ? fs::path(name) : latest.parent_path() / name;
  std::error_code ec;
  const fs::file_status st = fs::status(target, ec);
  TESSERA_CHECK(fs::is_regular_file(st), latest.string(), " names ", shown(target.string()),
                ", which ",
                fs::exists(st)                                         ? "is not a regular file"
                : !ec || ec == std::errc::no_such_file_or_directory ? "does not exist"
                                                                       : "cannot be read: " +
                                                                             ec.message());
  return target.string();
}

}  // namespace

std::string resolve_checkpoint(const std::string& path_or_dir) {
  fs::path p(path_or_dir);
  std::error_code ec;
  fs::file_status st = fs::status(p, ec);
  if (fs::is_directory(st)) {
    fs::path latest = p / "latest";
    const fs::file_status lst = fs::status(latest, ec);
    if (!fs::is_regular_file(lst)) {
      TESSERA_CHECK(!fs::exists(lst), "no checkpoint to resume in ", path_or_dir, ": ",
                    latest.string(), " is not a regular file (it should name a checkpoint file)");
      // Checkpoints without a `latest` (copied without it, or deleted): say which to pass.
      const std::vector<CheckpointFile> cks = list_checkpoints(path_or_dir);
      TESSERA_FAIL("no checkpoint to resume in ", path_or_dir, ": ", latest.string(),
                   " does not exist",
                   cks.empty() ? std::string()
                               : " (the directory holds " + std::to_string(cks.size()) +
                                     " checkpoint file(s); pass one, e.g. " + cks.back().path +
                                     ", or `train --resume auto` chooses)");
    }
    return follow_latest(latest);
  }
  TESSERA_CHECK(fs::exists(st), "checkpoint ", path_or_dir, " does not exist");
  if (p.filename() == "latest") return follow_latest(p);
  return path_or_dir;
}

}  // namespace tessera
