// The digest file beside a checkpoint: see sidecar.h.
#include "checkpoint/sidecar.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "checkpoint/digest.h"
#include "checkpoint/probe.h"
#include "core/text.h"
#include "core/error.h"

namespace tessera {
namespace fs = std::filesystem;

namespace {

// A digest line, a size line and at most 8192 chunk lines of 80 bytes: anything longer is not ours.
constexpr size_t kMaxDigestFileBytes = size_t(1) << 20;
constexpr uint64_t kMaxChunks = 8192;
constexpr const char* kSizeTag = "# bytes ";
constexpr const char* kChunkBytesTag = "# chunk-bytes ";
constexpr const char* kChunkTag = "# chunk ";

struct DigestFile {
  std::string hex;                  // 64 lowercase hex digits
  std::string name;                 // the file it is the digest of
  std::optional<uint64_t> bytes;    // the "# bytes N" line, when present
  uint64_t chunk_bytes = 0;         // the "# chunk-bytes N" line; 0 when there are no chunk lines
  std::vector<std::string> chunks;  // "# chunk i HEX": chunk i's SHA-256, lowercase
};

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 19 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c); });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

uint64_t chunk_count(uint64_t bytes, uint64_t chunk_bytes) {
  return bytes / chunk_bytes + (bytes % chunk_bytes != 0);
}

// Runs every job on OpenMP's threads, the first one first (it may be the longest: the whole file),
// and rethrows the message of the first that failed.
void run_parallel(const std::vector<std::function<void()>>& jobs) {
  std::mutex mutex;
  std::string error;
  // The tasks end at the parallel region's closing barrier, before jobs, mutex and error go.
#pragma omp parallel
#pragma omp single
  for (size_t i = 0; i < jobs.size(); ++i) {
#pragma omp task firstprivate(i) shared(jobs, mutex, error)
    try {
      jobs[i]();
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex);
      if (error.empty()) error = e.what();
    }
  }
  if (!error.empty()) throw Error(error);
}

// Parses the text; on malformed text returns nullopt with the reason in *why.
std::optional<DigestFile> parse_digest_file(const std::string& text, std::string* why) {
  if (text.size() > kMaxDigestFileBytes)
    return *why = "larger than " + std::to_string(kMaxDigestFileBytes) + " bytes", std::nullopt;
  DigestFile d;
  bool have_digest = false;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '#') {
      if (line.rfind(kSizeTag, 0) == 0) {
        const std::string n = line.substr(std::string(kSizeTag).size());
        if (!all_digits(n) || d.bytes) return *why = "bad size line '" + line + "'", std::nullopt;
        d.bytes = std::stoull(n);
      } else if (line.rfind(kChunkBytesTag, 0) == 0) {
        const std::string n = line.substr(std::string(kChunkBytesTag).size());
        if (!all_digits(n) || std::stoull(n) == 0 || d.chunk_bytes)
          return *why = "bad chunk size line '" + line + "'", std::nullopt;
        d.chunk_bytes = std::stoull(n);
      } else if (line.rfind(kChunkTag, 0) == 0) {
        const std::string rest = line.substr(std::string(kChunkTag).size());
        const size_t space = rest.find(' ');
        const std::string index = rest.substr(0, space);
        const std::string hex = space == std::string::npos ? "" : rest.substr(space + 1);
        if (!all_digits(index) || !is_hex64(hex))
          return *why = "bad chunk line '" + line.substr(0, 100) + "'", std::nullopt;
        if (std::stoull(index) != d.chunks.size())
          return *why = "chunk line " + index + " where chunk " + std::to_string(d.chunks.size()) +
                        " was due",
                 std::nullopt;
        d.chunks.push_back(lower(hex));
      }
      continue;  // other comments are allowed, as sha256sum -c allows them
    }
    if (have_digest) return *why = "more than one digest line", std::nullopt;
    // sha256sum's format: 64 hex digits, a space, ' ' (text mode) or '*' (binary mode), the name.
    const bool hex_ok =
        line.size() > 66 && std::all_of(line.begin(), line.begin() + 64,
                                        [](unsigned char c) { return std::isxdigit(c); });
    if (!hex_ok || line[64] != ' ' || (line[65] != ' ' && line[65] != '*'))
      return *why = "expected '<64 hex digits>  <file name>', found '" + line.substr(0, 100) + "'",
             std::nullopt;
    d.hex = lower(line.substr(0, 64));
    d.name = line.substr(66);
    have_digest = true;
  }
  if (!have_digest) return *why = "no digest line", std::nullopt;
  if (d.chunk_bytes || !d.chunks.empty()) {
    if (!d.bytes || !d.chunk_bytes)
      return *why = "chunk lines without a size line and a chunk size line", std::nullopt;
    const uint64_t want = chunk_count(*d.bytes, d.chunk_bytes);
    if (d.chunks.size() != want)
      return *why = std::to_string(d.chunks.size()) + " chunk lines for " +
                    std::to_string(*d.bytes) + " bytes in chunks of " +
                    std::to_string(d.chunk_bytes) + " (" + std::to_string(want) + " expected)",
             std::nullopt;
  }
  return d;
}

// Reads at most kMaxDigestFileBytes + 1 bytes (a longer file is malformed, not read whole). A
// digest file that vanished meanwhile is a plain error (another rank moved it aside: retention.h),
// one that cannot be read is CheckpointUnreadable.
std::string read_small_file(const std::string& path, const std::string& checkpoint) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    const std::string why = std::strerror(err);
    TESSERA_CHECK(err != ENOENT, "checkpoint ", checkpoint, ": its digest file ", path,
                  " disappeared");
    throw CheckpointUnreadable("checkpoint " + checkpoint + ": cannot read its digest file " +
                               path + ": " + why);
  }
  std::string text(kMaxDigestFileBytes + 1, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      throw CheckpointUnreadable("checkpoint " + checkpoint + ": cannot read its digest file " +
                                 path + ": " + why);
    }
    if (n == 0) break;
    got += size_t(n);
  }
  ::close(fd);
  text.resize(got);
  return text;
}

// The file descriptor of the checkpoint, closed on scope exit. Every check reads through it, so a
// file renamed away meanwhile (by --resume auto on another rank) is read whole as it was.
class OpenFile {
 public:
  explicit OpenFile(const std::string& path) {
    // O_NONBLOCK: a FIFO named as a checkpoint must not block the open (it is refused below).
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) {
      const int err = errno;
      const std::string why = std::strerror(err);
      TESSERA_CHECK(err != ENOENT, "cannot open checkpoint ", path, ": no such file");
      throw CheckpointUnreadable("cannot open checkpoint " + path + ": " + why);
    }
  }
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  ~OpenFile() { ::close(fd_); }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// HDF5 looks for its 8-byte signature at byte 0 and then at 512, 1024, 2048 ... (after a user
// block): a file with none there is not HDF5, whatever its name.
bool has_hdf5_signature(int fd, uint64_t size, const std::string& path) {
  static const char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  for (uint64_t at = 0; at + 8 <= size; at = at ? 2 * at : 512) {
    char buf[8];
    ssize_t n;
    do n = ::pread(fd, buf, 8, off_t(at));
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      const std::string why = std::strerror(errno);
      throw CheckpointUnreadable("cannot read checkpoint " + path + ": " + why);
    }
    if (n == 8 && std::memcmp(buf, kSignature, 8) == 0) return true;
  }
  return false;
}

// One "cannot be verified" warning per file and process: a checkpoint is often opened twice in a
// row (its attributes, then its weights), and one warning says it all.
void warn_unverified_once(const std::string& path, const std::string& sidecar) {
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (!warned.insert(path).second) return;
  std::cerr << "warning: checkpoint " << path << " has no digest file " << sidecar
            << " (written before tessera recorded checkpoint digests?): it cannot be verified "
               "against corruption; loading it unchecked"
            << std::endl;
}

}  // namespace

std::string digest_path(const std::string& checkpoint) { return checkpoint + ".sha256"; }

std::string digest_file_text(const std::string& file, const std::string& name,
                             uint64_t chunk_bytes) {
  TESSERA_CHECK(!name.empty() && name.find_first_of("\n\r\\") == std::string::npos,
                "cannot write a digest for ", file, ": bad file name '", name, "'");
  const OpenFile f(file);
  struct stat info {};
  TESSERA_CHECK(::fstat(f.fd(), &info) == 0, "cannot read ", file, ": ", std::strerror(errno));
  const uint64_t size = uint64_t(info.st_size);
  if (chunk_bytes == 0) {
    constexpr uint64_t MiB = uint64_t(1) << 20;
    chunk_bytes = std::max(kDigestChunkBytes, (size / kMaxChunks + MiB) / MiB * MiB);
  }
  // One chunk or less: the whole file's line says it all.
  const uint64_t n = size > chunk_bytes ? chunk_count(size, chunk_bytes) : 0;
  std::string whole;
  std::vector<std::string> chunks(n);
  std::vector<std::function<void()>> jobs{[&] { whole = sha256_range(f.fd(), 0, size, file); }};
  for (uint64_t i = 0; i < n; ++i)
    jobs.push_back([&, i] {
      chunks[i] = sha256_range(f.fd(), i * chunk_bytes,
                               std::min(chunk_bytes, size - i * chunk_bytes), file);
    });
  run_parallel(jobs);
  std::string text = whole + "  " + name + "\n" + kSizeTag + std::to_string(size) + "\n";
  if (n) text += kChunkBytesTag + std::to_string(chunk_bytes) + "\n";
  for (uint64_t i = 0; i < n; ++i) text += kChunkTag + std::to_string(i) + " " + chunks[i] + "\n";
  return text;
}

namespace {
std::atomic<int64_t> g_hashes{0};
}  // namespace

int64_t checkpoint_hashes() { return g_hashes.load(std::memory_order_relaxed); }

FileCheck verify_checkpoint_file(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  TESSERA_CHECK(fs::exists(st), "cannot open checkpoint ", path, ": no such file");
  TESSERA_CHECK(!fs::is_directory(st), "cannot open checkpoint ", path, ": is a directory");
  const OpenFile file(path);
  struct stat info {};
  if (::fstat(file.fd(), &info) != 0) {
    const std::string why = std::strerror(errno);
    throw CheckpointUnreadable("cannot read checkpoint " + path + ": " + why);
  }
  TESSERA_CHECK(S_ISREG(info.st_mode), "cannot open checkpoint ", path,
                ": not a regular file (a device, pipe or socket)");
  const uint64_t size = uint64_t(info.st_size);
  // The digest file sits beside the real file: a link to a checkpoint is checked like it.
  fs::path real = fs::canonical(path, ec);
  if (ec) real = fs::path(path);
  const std::string sidecar = digest_path(real.string());
  if (!fs::exists(fs::symlink_status(sidecar, ec))) {
    TESSERA_CHECK(has_hdf5_signature(file.fd(), size, path), "cannot open checkpoint ", path,
                  ": not an HDF5 file (", size == 0 ? "it is empty" : "no HDF5 signature in it",
                  ")");
    probe_hdf5_file(path);
    warn_unverified_once(path, sidecar);
    return FileCheck::NoDigest;
  }

  std::string why;
  const std::optional<DigestFile> d = parse_digest_file(read_small_file(sidecar, path), &why);
  TESSERA_CHECK(d, "checkpoint ", path, ": its digest file ", sidecar, " is malformed (",
                printable(why, false, 200),
                "); remove it to load the checkpoint unverified");
  const std::string name = real.filename().string();
  TESSERA_CHECK(d->name == name, "checkpoint ", path, ": its digest file ", sidecar, " is for '",
                printable(d->name, false, 160), "', not '", name,
                "' (copied or renamed without its checkpoint?); rewrite it with `sha256sum ", name,
                " > ", fs::path(sidecar).filename().string(), "` once you trust the checkpoint");
  TESSERA_CHECK(!d->bytes || *d->bytes == size, "checkpoint ", path, " is ", size,
                " bytes, but its digest file ", sidecar, " records ", *d->bytes,
                ": the file was truncated or appended to");
  const char* damage = "the file is corrupt, or a crash interrupted a save that replaced it";
  if (!d->chunks.empty()) {  // chunk by chunk, on OpenMP's threads; the size was checked above
    std::vector<std::string> got(d->chunks.size());
    std::vector<std::function<void()>> jobs;
    for (size_t i = 0; i < got.size(); ++i)
      jobs.push_back([&, i] {
        const uint64_t at = i * d->chunk_bytes;
        got[i] = sha256_range(file.fd(), at, std::min(d->chunk_bytes, size - at), path);
      });
    try {
      run_parallel(jobs);
    } catch (const Error& e) {  // read(2) failed: an I/O error, not a verdict on the bytes
      throw CheckpointUnreadable(e.what());
    }
    g_hashes.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = 0; i < got.size(); ++i) {
      const uint64_t at = i * d->chunk_bytes, end = std::min(at + d->chunk_bytes, size);
      TESSERA_CHECK(got[i] == d->chunks[i], "checkpoint ", path, " does not match its digest file ",
                    sidecar, " (bytes ", at, " to ", end, ": SHA-256 ", got[i], ", recorded ",
                    d->chunks[i], "): ", damage);
    }
    return FileCheck::Verified;
  }
  uint64_t hashed = 0;
  std::string hex;
  try {
    hex = sha256_fd(file.fd(), path, &hashed);
  } catch (const Error& e) {  // read(2) failed: an I/O error, not a verdict on the bytes
    throw CheckpointUnreadable(e.what());
  }
  g_hashes.fetch_add(1, std::memory_order_relaxed);
  TESSERA_CHECK(hex == d->hex && (!d->bytes || hashed == *d->bytes), "checkpoint ", path,
                " does not match its digest file ", sidecar, " (SHA-256 ", hex, ", recorded ",
                d->hex, "): ", damage);
  return FileCheck::Verified;
}

}  // namespace tessera
