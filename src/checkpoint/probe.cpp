// Reading an unverified checkpoint's HDF5 structure in a child process first: see probe.h.
#include "checkpoint/probe.h"

#include <fcntl.h>
#include <hdf5.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>
#include <vector>

#include "checkpoint/h5.h"
#include "checkpoint/h5_owned.h"
#include "checkpoint/sidecar.h"  // CheckpointUnreadable
#include "core/error.h"

namespace tessera {
namespace {

// ---- the child: HDF5 calls only ----

constexpr int kMaxDepth = 64;  // no checkpoint nests groups this deep: a cycle of hard links

herr_t collect_hard_link(hid_t, const char* name, const H5L_info_t* info, void* out) {
  if (info->type == H5L_TYPE_HARD) static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

herr_t collect_attr(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

// Everything the loaders could read, read the way they read it (h5.cpp); stops at the first
// failure HDF5 reports, describing it in failure().
class Walker {
 public:
  Walker(const std::string& path, uint64_t file_bytes) : path_(path), file_bytes_(file_bytes) {}

  bool run() {
    H5Owned fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    if (!ok(fapl.get(), "H5Pcreate")) return false;
    // As H5File::open: a file this process has open already (a reader still holding it) is open in
    // the forked child's copy of the library too, and HDF5 refuses a second open of it with
    // another close degree ("file close degree doesn't match").
    if (!ok(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), "H5Pset_fclose_degree")) return false;
#if H5_VERSION_GE(1, 10, 7)
    // As H5File::open: no flock, which fails on many network file systems.
    if (!ok(H5Pset_file_locking(fapl.get(), false, true), "H5Pset_file_locking")) return false;
#endif
    file_ = H5Fopen(path_.c_str(), H5F_ACC_RDONLY, fapl.get());
    if (!ok(file_, "cannot open it")) return false;
    const bool read = group("/", 0);
    H5Fclose(file_);
    return read;
  }
  const std::string& failure() const { return failure_; }

 private:
  bool ok(int64_t ret, const std::string& what) {
    if (ret >= 0) return true;
    failure_ = what + ": " + hdf5_reason();
    return false;
  }
  bool fail(const std::string& what) {
    failure_ = what;
    return false;
  }

  bool group(const std::string& abs, int depth) {
    if (depth > kMaxDepth)
      return fail("groups nest deeper than " + std::to_string(kMaxDepth) + " at " + abs);
    H5Owned g(H5Gopen2(file_, abs.c_str(), H5P_DEFAULT), H5Gclose);
    if (!ok(g.get(), "cannot open group " + abs) || !attributes(g.get(), abs)) return false;
    H5Owned gcpl(H5Gget_create_plist(g.get()), H5Pclose);
    unsigned order = 0;
    if (!ok(gcpl.get(), "cannot read group " + abs) ||
        !ok(H5Pget_link_creation_order(gcpl.get(), &order), "cannot read group " + abs))
      return false;
    // The loaders list a group by creation order where it is indexed and look links up by name:
    // both indexes are read.
    std::vector<std::string> by_name, by_order;
    hsize_t idx = 0;
    if (!ok(H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_hard_link, &by_name),
            "cannot list group " + abs))
      return false;
    idx = 0;
    if ((order & H5P_CRT_ORDER_INDEXED) && !ok(H5Literate(g.get(), H5_INDEX_CRT_ORDER, H5_ITER_INC,
                                                          &idx, collect_hard_link, &by_order),
                                               "cannot list group " + abs))
      return false;
    // The loaders open what the creation-order index lists by name: the two must hold the same
    // links, or the loaders would meet what was not read here.
    if (order & H5P_CRT_ORDER_INDEXED) {
      std::vector<std::string> a = by_name, b = by_order;
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      if (a != b)
        return fail("the link indexes of group " + abs +
                    " disagree (by name: " + std::to_string(by_name.size()) +
                    " links, by creation order: " + std::to_string(by_order.size()) + ")");
    }
    for (const std::string& name : by_name) {
      const std::string child = abs == "/" ? "/" + name : abs + "/" + name;
      if (!ok(H5Lexists(file_, child.c_str(), H5P_DEFAULT), "cannot look up " + child))
        return false;
      H5Owned o(H5Oopen(g.get(), name.c_str(), H5P_DEFAULT), H5Oclose);
      if (!ok(o.get(), "cannot open " + child)) return false;
      const H5I_type_t kind = H5Iget_type(o.get());
      if (kind == H5I_GROUP && !group(child, depth + 1)) return false;
      if (kind == H5I_DATASET && !dataset(child)) return false;
    }
    return true;
  }

  bool attributes(hid_t obj, const std::string& abs) {
    std::vector<std::string> names;
    hsize_t idx = 0;
    if (!ok(H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, &names),
            "cannot list the attributes of " + abs))
      return false;
    for (const std::string& name : names)
      if (!attribute(obj, abs + " attribute " + name, name)) return false;
    return true;
  }

  bool attribute(hid_t obj, const std::string& what, const std::string& name) {
    if (!ok(H5Aexists(obj, name.c_str()), "cannot look up " + what)) return false;
    H5Owned a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
    if (!ok(a.get(), "cannot open " + what)) return false;
    H5Owned space(H5Aget_space(a.get()), H5Sclose);
    if (!ok(space.get(), "cannot read " + what)) return false;
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    H5Owned type(H5Aget_type(a.get()), H5Tclose);
    if (!ok(n, "cannot read " + what) || !ok(type.get(), "cannot read " + what)) return false;
    if (n != 1) return true;  // the loaders read scalars only, and refuse others unread
    const H5T_class_t cls = H5Tget_class(type.get());
    if (cls == H5T_INTEGER) {
      int64_t i = 0;
      uint64_t u = 0;
      return ok(H5Aread(a.get(), H5T_NATIVE_INT64, &i), "cannot read " + what) &&
             ok(H5Aread(a.get(), H5T_NATIVE_UINT64, &u), "cannot read " + what);
    }
    if (cls == H5T_FLOAT) {
      double d = 0;
      return ok(H5Aread(a.get(), H5T_NATIVE_DOUBLE, &d), "cannot read " + what);
    }
    if (cls != H5T_STRING) return true;
    const htri_t variable = H5Tis_variable_str(type.get());
    if (!ok(variable, "cannot read " + what)) return false;
    if (variable) {  // in the global heap
      char* p = nullptr;
      if (!ok(H5Aread(a.get(), type.get(), &p), "cannot read " + what)) return false;
      H5free_memory(p);
      return true;
    }
    const size_t size = H5Tget_size(type.get());
    if (size > file_bytes_) return fail(what + " claims " + std::to_string(size) + " bytes");
    buf_.resize(size);
    return ok(H5Aread(a.get(), type.get(), buf_.data()), "cannot read " + what);
  }

  bool dataset(const std::string& abs) {
    H5Owned ds(H5Dopen2(file_, abs.c_str(), H5P_DEFAULT), H5Dclose);
    if (!ok(ds.get(), "cannot open dataset " + abs) || !attributes(ds.get(), abs)) return false;
    H5Owned type(H5Dget_type(ds.get()), H5Tclose);
    H5Owned space(H5Dget_space(ds.get()), H5Sclose);
    if (!ok(type.get(), "cannot read the type of " + abs) ||
        !ok(space.get(), "cannot read the shape of " + abs))
      return false;
    std::vector<hsize_t> dims;  // empty for a scalar
    if (H5Sget_simple_extent_type(space.get()) == H5S_SIMPLE) {
      const int rank = H5Sget_simple_extent_ndims(space.get());
      if (!ok(rank, "cannot read the shape of " + abs)) return false;
      dims.assign(size_t(rank) + 1, 0);  // one spare: a rank of 0 still has a buffer
      if (!ok(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr),
              "cannot read the shape of " + abs))
        return false;
      dims.pop_back();
    }
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    if (!ok(n, "cannot read the shape of " + abs)) return false;
    const hid_t native = native_type(type.get());
    if (native < 0 || n == 0) return true;  // a type the loaders refuse unread, or no elements
    const size_t size = H5Tget_size(native);
    // A tensor larger than the whole file was never written there: its shape is damaged (and the
    // loaders would try to allocate it).
    if (uint64_t(n) > file_bytes_ / size)
      return fail("dataset " + abs + " claims " + std::to_string(n) + " elements, more than the " +
                  std::to_string(file_bytes_) + "-byte file holds");
    const int plain = plain_contiguous(ds.get());
    if (!ok(plain, "cannot read the storage layout of " + abs)) return false;
    if (plain && n > 2) return read_ends(ds.get(), space.get(), dims, native, size, abs);
    buf_.resize(size_t(n) * size);
    return ok(H5Dread(ds.get(), native, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf_.data()),
              "cannot read dataset " + abs);
  }

  // 1 when the dataset's bytes are one contiguous run in this file, unfiltered (the way every
  // writer of tessera's stores them), 0 otherwise, -1 on an error. Reading such a run is a
  // bounds-checked read of [address, address + bytes) and a conversion whose steps do not depend
  // on the values: no byte inside it can make HDF5 crash or loop, so its two ends stand for it
  // (read_ends). Chunked storage (a B-tree of chunk addresses), compact storage (inside the
  // object header), virtual datasets and external files are metadata too: read whole.
  static int plain_contiguous(hid_t ds) {
    H5Owned dcpl(H5Dget_create_plist(ds), H5Pclose);
    if (dcpl.get() < 0) return -1;
    const H5D_layout_t layout = H5Pget_layout(dcpl.get());
    const int filters = H5Pget_nfilters(dcpl.get());
    const int external = H5Pget_external_count(dcpl.get());
    if (layout < 0 || filters < 0 || external < 0) return -1;
    return layout == H5D_CONTIGUOUS && filters == 0 && external == 0;
  }

  // The first and the last element of a contiguous dataset, in the loaders' memory type: the
  // run's start and its end, checked against the file's end, through the same conversion. The
  // loader then reads the bytes between (1.5 GB of a GPT-2 124M checkpoint with AdamW's state,
  // which the child no longer reads a second time: scripts/bench_checkpoint.sh's probe row).
  bool read_ends(hid_t ds, hid_t space, const std::vector<hsize_t>& dims, hid_t native, size_t size,
                 const std::string& abs) {
    const size_t rank = dims.size();
    std::vector<hsize_t> points(2 * rank, 0);  // (0, ..., 0), then (d0 - 1, ..., dr - 1)
    for (size_t i = 0; i < rank; ++i) points[rank + i] = dims[i] - 1;
    H5Owned file_space(H5Scopy(space), H5Sclose);
    const hsize_t two = 2;
    H5Owned memory_space(H5Screate_simple(1, &two, nullptr), H5Sclose);
    if (!ok(file_space.get(), "H5Scopy") || !ok(memory_space.get(), "H5Screate_simple") ||
        !ok(H5Sselect_elements(file_space.get(), H5S_SELECT_SET, 2, points.data()),
            "cannot select the ends of dataset " + abs))
      return false;
    buf_.resize(2 * size);
    return ok(H5Dread(ds, native, memory_space.get(), file_space.get(), H5P_DEFAULT, buf_.data()),
              "cannot read dataset " + abs);
  }

  // The memory type a loader reads a stored type as; -1 for one it does not read.
  static hid_t native_type(hid_t type) {
    const size_t size = H5Tget_size(type);
    switch (H5Tget_class(type)) {
      case H5T_FLOAT:
        return size == 4 ? H5T_NATIVE_FLOAT : size == 8 ? H5T_NATIVE_DOUBLE : -1;
      case H5T_INTEGER: {
        const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
        switch (size) {
          case 1:
            return is_signed ? H5T_NATIVE_INT8 : H5T_NATIVE_UINT8;
          case 2:
            return is_signed ? H5T_NATIVE_INT16 : H5T_NATIVE_UINT16;
          case 4:
            return is_signed ? H5T_NATIVE_INT32 : H5T_NATIVE_UINT32;
          case 8:
            return is_signed ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64;
          default:
            return -1;
        }
      }
      default:
        return -1;
    }
  }

  std::string path_;
  uint64_t file_bytes_;
  hid_t file_ = -1;
  std::string failure_;
  std::vector<unsigned char> buf_;  // one attribute's or dataset's bytes at a time
};

void write_all(int fd, const std::string& text) {
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += size_t(n);
  }
}

[[noreturn]] void run_child(const std::string& path, uint64_t file_bytes, int out, pid_t parent,
                            double timeout_s) {
  // The child never outlives the process waiting for it: killed by a launcher's time limit, an
  // interrupt or mpirun ending the job, that process could not stop a child looping in HDF5, which
  // would spin on alone. So it dies with it (the forking thread waits for it to the end, so its
  // exit is the process's), and is gone too if that happened before this line; and a loop ends at
  // its CPU time limit (below).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  // HDF5 looping on damaged metadata spins on the CPU: past timeout_s seconds of CPU time the
  // kernel ends the child with SIGXCPU. Time spent waiting (a slow file system, a job suspended
  // with SIGSTOP) does not count: the parent's wall-clock deadline covers a read that never returns.
  const rlim_t cpu = rlim_t(std::clamp(std::ceil(timeout_s), 1.0, 1e9));
  const struct rlimit cpu_limit = {cpu, cpu + 5};
  setrlimit(RLIMIT_CPU, &cpu_limit);
  // A crash is the expected way for a damaged file to end this process: the default action (no
  // handler the parent installed, no core file), and whatever the C library or a sanitizer prints
  // about it goes nowhere; the parent reports it.
  const struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGSYS, SIGTRAP, SIGXCPU})
    signal(sig, SIG_DFL);
  // The stop signals are the parent's to act on (a Ctrl-C or a scheduler's SIGTERM reaches the
  // whole process group): a child killed by one would look like a file that cannot be read, and the
  // parent finishes its step and saves anyway. The child dies with the parent (above).
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) signal(sig, SIG_IGN);
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (devnull >= 0) dup2(devnull, STDERR_FILENO);
  int status = 1;
  try {
    hdf5_init();
    Walker w(path, file_bytes);
    if (w.run())
      status = 0;
    else
      write_all(out, w.failure());
  } catch (const std::exception& e) {  // std::bad_alloc from a damaged size
    write_all(out, e.what());
  }
  _exit(status);
}

// ---- the parent ----

// The child's report, read until it exits (the pipe's write end closes with it) or until
// `deadline`; false on the deadline.
bool read_pipe(int fd, std::chrono::steady_clock::time_point deadline, std::string* text) {
  char buf[4096];
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    struct pollfd p = {fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, int(std::min<int64_t>(left.count(), 1 << 30)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;  // the deadline, checked above
    const ssize_t n = ready < 0 ? -1 : ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (text->size() < 4096) text->append(buf, size_t(n));
  }
  for (char& c : *text)
    if (c == '\n' || c == '\r') c = ' ';
  return true;
}

// The child's exit status, and the CPU seconds it used in *cpu_s.
int wait_for(pid_t pid, double* cpu_s) {
  int status = 0;
  struct rusage use {};
  while (wait4(pid, &status, 0, &use) < 0)
    if (errno != EINTR) return -1;
  *cpu_s = double(use.ru_utime.tv_sec + use.ru_stime.tv_sec) +
           1e-6 * double(use.ru_utime.tv_usec + use.ru_stime.tv_usec);
  return status;
}

// ---- deadlines remembered ----
// A file on which this process's probe ran out of time is refused again at once while it is
// unchanged: train reads a checkpoint's attributes before it loads it, and each read would
// otherwise wait out the deadline again (minutes). Unchanged = the same device, inode, size and
// modification time as when that probe started; a write after it, even within the file system's
// timestamp granularity, came long before the deadline passed and so shows. Other refusals come
// in milliseconds and are not remembered, and a file that passed is probed on every load
// (probe.h).
struct Refusal {
  dev_t dev;
  ino_t ino;
  off_t size;
  int64_t mtime_ns;
  std::string error;
  bool same_file(const struct stat& st) const {
    return dev == st.st_dev && ino == st.st_ino && size == st.st_size &&
           mtime_ns == int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
};
std::mutex refusals_mutex;
std::map<std::string, Refusal> refusals;  // by path

const std::string* refused_before(const std::string& path, const struct stat& st) {
  std::lock_guard<std::mutex> lock(refusals_mutex);
  const auto it = refusals.find(path);
  return it != refusals.end() && it->second.same_file(st) ? &it->second.error : nullptr;
}

[[noreturn]] void refuse(const std::string& path, const struct stat& st, const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(refusals_mutex);
    refusals[path] = {st.st_dev, st.st_ino, st.st_size,
                      int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, error};
  }
  TESSERA_FAIL(error);
}

}  // namespace

double probe_timeout_s(uint64_t file_bytes) { return 120.0 + double(file_bytes) / 10e6; }

void probe_hdf5_file(const std::string& path, double timeout_s, bool digest_matched) {
  struct stat st {};
  TESSERA_CHECK(::stat(path.c_str(), &st) == 0, "cannot open checkpoint ", path, ": ",
                std::strerror(errno));
  if (const std::string* error = refused_before(path, st)) TESSERA_FAIL(*error);
  if (timeout_s <= 0) timeout_s = probe_timeout_s(uint64_t(st.st_size));
  const std::string unverified = digest_matched ? "" : " (it has no digest file)";
  // A digest file that matches damaged HDF5 metadata was written after the damage (by hand, with
  // sha256sum): the bytes are as recorded, but not as tessera wrote them.
  const std::string subject =
      "checkpoint " + path +
      (digest_matched ? " matches its digest file (rewritten after the damage?), but"
                      : " has no digest file and");
  hdf5_init();  // the child starts from a library this process has set up
  int fds[2];
  TESSERA_CHECK(pipe2(fds, O_CLOEXEC) == 0, "cannot check checkpoint ", path, unverified,
                ": pipe: ", std::strerror(errno));
  // The wall clock's deadline is a read that never returns (a hung network file system); a loop
  // meets the child's CPU limit first. Four times the limit: a busy host shares its cores.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(4 * timeout_s * 1000));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    ::close(fds[0]);
    run_child(path, uint64_t(st.st_size), fds[1], parent, timeout_s);
  }
  const int fork_errno = errno;
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    TESSERA_FAIL("cannot check checkpoint ", path, unverified,
                 " in a child process: fork: ", std::strerror(fork_errno));
  }
  std::string said;
  const bool finished = read_pipe(fds[0], deadline, &said);
  ::close(fds[0]);
  if (!finished) kill(pid, SIGKILL);
  double cpu_s = 0;
  const int status = wait_for(pid, &cpu_s);
  TESSERA_CHECK(status >= 0, "cannot check checkpoint ", path, unverified,
                ": waitpid: ", std::strerror(errno));
  std::ostringstream limit, used;
  limit << timeout_s;
  used << int64_t(cpu_s);
  // Not a verdict on the bytes (CheckpointUnreadable: a resume or a rollback stops rather than
  // pass over the file): the read waited past the deadline, or something killed the reader.
  if (!finished)
    throw CheckpointUnreadable("cannot check checkpoint " + path + unverified + ": reading its "
                               "HDF5 structure did not return in " + std::to_string(int64_t(
                               4 * timeout_s)) + " s (" + used.str() + " s of CPU): the file "
                               "system is stalled or very slow, or the process was stopped; "
                               "try again");
  // Damaged metadata can send HDF5 round a loop for good (a global heap read that never ends).
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU)
    refuse(path, st,
           subject + " reading its HDF5 structure did not finish in " + limit.str() +
               " s of CPU time: its metadata is damaged (HDF5 loops on it)");
  const std::string damaged = subject + " its HDF5 structure is damaged: ";
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    TESSERA_CHECK(sig == SIGINT || sig == SIGTERM || sig == SIGKILL || sig == SIGHUP, damaged,
                  "reading it ended with signal ", sig, " (", strsignal(sig), ")");
    throw CheckpointUnreadable("cannot check checkpoint " + path + unverified +
                               ": the process reading it was stopped by signal " +
                               std::to_string(sig) + " (" + strsignal(sig) + "), not by the "
                               "file; try again");
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  TESSERA_CHECK(code == 0, damaged,
                said.empty() ? "reading it ended with exit status " + std::to_string(code) : said);
}

}  // namespace tessera
