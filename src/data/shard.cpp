// Token shards and their loss masks: writing through a temporary file, reading with pread(2).
//
// Invariants:
//  - A shard under its final name is always complete: write_shard writes `path.tmp`, fsyncs it,
//    renames it over `path` and fsyncs the directory (rename is atomic on POSIX file systems).
//  - An open Shard has been fully validated (magic, version, exact size, every id < vocab_size), so
//    a corrupt file fails at open, naming the file, before training starts.
//  - Reads are pread calls on the descriptor opened then, not loads from a memory mapping. A mapped
//    file that shrinks under its reader (truncate, a rewrite in place) turns the next load into
//    SIGBUS, which kills the process without a word about which file; a pread past the new end
//    returns short, and the error names the shard. (Keeping mmap would need a process-wide SIGBUS
//    handler that finds the shard from the faulting address through an async-signal-safe registry
//    and shares the signal with MPI, CUDA and the sanitizers.) pread costs one system call per
//    window of T + 1 tokens, from the same page cache: configs/tiny.yaml's batch of 12 windows
//    took 70 us instead of 7 us (measured in a sandbox whose system calls are slow), next to a
//    training step of about 500 ms on 2 CPU cores.
//  - Tokens are stored little-endian, as llm.c writes them; like llm.c we assume a little-endian
//  host.
//  - A loss mask is written, opened, validated and read like its shard (write_atomically, pread),
//    through a descriptor of its own; a Shard with a mask has checked it whole at open.
#include "data/shard.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "checkpoint/digest.h"  // crc32c
#include "core/error.h"

namespace tessera::data {
namespace {

constexpr int64_t kHeaderBytes = kShardHeaderInts * int64_t(sizeof(int32_t));  // 1024
constexpr int64_t kScanTokens = int64_t(1) << 18;  // tokens per read of the id scan at open
constexpr uint8_t kMaskBits = kMaskScored | kMaskExampleStart | kMaskPairStart;

// The largest byte a mask of this version holds.
uint8_t max_mask_byte(int version) {
  return version == 1 ? kMaskScored : version == 2 ? kMaskScored | kMaskExampleStart : kMaskBits;
}

std::string errno_str() { return std::strerror(errno); }

// Writes all n bytes (write(2) may stop short, e.g. on signals or large buffers).
void write_all(int fd, const void* data, size_t n, const std::string& path, const char* what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    TESSERA_CHECK(w > 0, what, ": writing ", path, " failed: ", errno_str());
    p += w;
    n -= size_t(w);
  }
}

// fsync of the directory makes the rename itself durable (a rename is an entry in the directory,
// which has its own fsync).
void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some file systems do not let a directory be opened
  ::fsync(fd);
  ::close(fd);
}

// Writes the 256-int header and then `bytes` of data to path + ".tmp", fsyncs it and renames it
// over path (creating missing parent directories); on any failure the temporary file is removed
// and path is untouched. `what` begins each error.
void write_atomically(const std::string& path, const char* what,
                      const int32_t (&header)[kShardHeaderInts], const void* data, size_t bytes) {
  const std::filesystem::path final_path(path);
  std::error_code ec;
  if (final_path.has_parent_path()) {
    std::filesystem::create_directories(final_path.parent_path(), ec);
    TESSERA_CHECK(!ec, what, ": cannot create the directory ", final_path.parent_path().string(),
                  " for ", path, ": ", ec.message());
  }

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TESSERA_CHECK(fd >= 0, what, ": cannot create ", tmp, ": ", errno_str());
  try {
    write_all(fd, header, sizeof(header), tmp, what);
    write_all(fd, data, bytes, tmp, what);
    TESSERA_CHECK(::fsync(fd) == 0, what, ": fsync of ", tmp, " failed: ", errno_str());
    TESSERA_CHECK(::close(fd) == 0, what, ": closing ", tmp, " failed: ", errno_str());
    fd = -1;
    TESSERA_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, what, ": renaming ", tmp, " to ", path,
                  " failed: ", errno_str());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());  // leave nothing half-written behind; the final name was never touched
    throw;
  }
  fsync_dir(final_path.parent_path());
}

int64_t current_size(int fd, const std::string& path) {
  struct stat st {};
  TESSERA_CHECK(::fstat(fd, &st) == 0, "cannot stat shard ", path, ": ", errno_str());
  return int64_t(st.st_size);
}

// Every open Shard holds a descriptor, and a large corpus has thousands of shards: past the soft
// limit on open files (often 1024) the limit is raised to the hard one, once, as Go and Python do.
int open_shard(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct rlimit lim {};
  if (fd < 0 && errno == EMFILE && ::getrlimit(RLIMIT_NOFILE, &lim) == 0 &&
      lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) == 0) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd >= 0) return fd;
  const int err = errno;
  if (err == EMFILE && ::getrlimit(RLIMIT_NOFILE, &lim) == 0)
    TESSERA_FAIL("cannot open shard ", path, ": ", std::strerror(err),
                 " (every open shard holds a file descriptor; the limit is ", lim.rlim_cur,
                 ": raise it with ulimit -n, or use fewer, larger shards)");
  TESSERA_FAIL("cannot open shard ", path, ": ", std::strerror(err));
}

// Reads n bytes at offset, fewer only where the file ends first; returns how many were read.
size_t pread_full(int fd, const std::string& path, void* data, size_t n, int64_t offset) {
  char* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, p + done, n - done, off_t(offset + int64_t(done)));
    if (r < 0 && errno == EINTR) continue;
    TESSERA_CHECK(r >= 0, "reading shard ", path, " failed: ", errno_str());
    if (r == 0) break;
    done += size_t(r);
  }
  return done;
}

// A read that found the file shorter than it was when opened (its size was checked then).
[[noreturn]] void fail_changed_size(int fd, const std::string& path, const std::string& what,
                                    int64_t end) {
  TESSERA_FAIL("shard ", path, " changed size while it was being read: ", what,
               " need bytes up to ", end, " but the file now has ", current_size(fd, path),
               " bytes (was it truncated or rewritten in place? write_shard replaces a shard by "
               "rename, which is safe while it is read)");
}

}  // namespace

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int64_t vocab_size) {
  TESSERA_CHECK(vocab_size > 0 && vocab_size <= (int64_t(1) << 32), "write_shard: ", path,
                ": vocab_size must be in [1, 2^32], got ", vocab_size);
  TESSERA_CHECK(tokens.size() <= size_t(std::numeric_limits<int32_t>::max()), "write_shard: ", path,
                ": ", tokens.size(),
                " tokens do not fit the header's int32 count (split the shard)");
  for (size_t i = 0; i < tokens.size(); ++i)
    TESSERA_CHECK(int64_t(tokens[i]) < vocab_size, "write_shard: ", path, ": token id ", tokens[i],
                  " at position ", i, " is not below the vocabulary size ", vocab_size);

  const bool u16 = vocab_size <= 65536;
  int32_t header[kShardHeaderInts] = {};
  header[0] = u16 ? kShardMagicU16 : kShardMagicU32;
  header[1] = u16 ? kShardVersionU16 : kShardVersionU32;
  header[2] = int32_t(tokens.size());
  header[3] = vocab_size <= std::numeric_limits<int32_t>::max() ? int32_t(vocab_size) : 0;

  if (u16) {
    const std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    write_atomically(path, "write_shard", header, narrow.data(), narrow.size() * sizeof(uint16_t));
  } else {
    write_atomically(path, "write_shard", header, tokens.data(), tokens.size() * sizeof(uint32_t));
  }
}

std::string loss_mask_path(const std::string& shard_path) {
  const bool bin = shard_path.ends_with(".bin");
  return shard_path.substr(0, shard_path.size() - (bin ? 4 : 0)) + ".mask";
}

void write_loss_mask(const std::string& path, const std::vector<uint8_t>& mask) {
  TESSERA_CHECK(mask.size() <= size_t(std::numeric_limits<int32_t>::max()),
                "write_loss_mask: ", path, ": ", mask.size(),
                " tokens do not fit the header's int32 count");
  bool pairs = false;
  for (size_t i = 0; i < mask.size(); ++i) {
    TESSERA_CHECK(mask[i] <= kMaskBits, "write_loss_mask: ", path, ": value ", int(mask[i]),
                  " at position ", i,
                  " has a bit other than scored (1), example start (2) and pair start (4)");
    TESSERA_CHECK(!(mask[i] & kMaskPairStart) || (mask[i] & kMaskExampleStart),
                  "write_loss_mask: ", path, ": value ", int(mask[i]), " at position ", i,
                  " marks a pair start (4) on a token that starts no example (2)");
    pairs = pairs || (mask[i] & kMaskPairStart);
  }
  int32_t header[kShardHeaderInts] = {};
  header[0] = kMaskMagic;
  header[1] = pairs ? kMaskVersionPairs : kMaskVersion;  // SFT masks stay version 2, unchanged
  header[2] = int32_t(mask.size());
  write_atomically(path, "write_loss_mask", header, mask.data(), mask.size());
}

void Shard::open_mask(const std::string& mask_path) {
  mask_path_ = mask_path;
  mask_fd_ = open_shard(mask_path);
  const std::string& path = mask_path_;
  const int64_t file_bytes = current_size(mask_fd_, path);
  TESSERA_CHECK(file_bytes >= kHeaderBytes, "loss mask ", path, " is ", file_bytes,
                " bytes, shorter than the ", kHeaderBytes, "-byte header");
  int32_t header[3];
  if (pread_full(mask_fd_, path, header, sizeof(header), 0) < sizeof(header))
    fail_changed_size(mask_fd_, path, "the header's first 3 ints", sizeof(header));
  TESSERA_CHECK(header[0] == kMaskMagic, "loss mask ", path, ": wrong magic ", header[0],
                " (expected ", kMaskMagic, ")");
  TESSERA_CHECK(header[1] >= 1 && header[1] <= kMaskVersionPairs, "loss mask ", path,
                ": unknown version ", header[1], " (expected 1, 2 or ", kMaskVersionPairs, ")");
  mask_version_ = header[1];
  const uint8_t max_byte = max_mask_byte(mask_version_);
  TESSERA_CHECK(header[2] == count_, "loss mask ", path, " holds ", header[2],
                " tokens but its shard ", path_, " holds ", count_,
                " (were they written by different runs of tokenize?)");
  TESSERA_CHECK(file_bytes == kHeaderBytes + count_, "loss mask ", path,
                " is truncated or oversized: the file has ", file_bytes,
                " bytes but its header says ", count_,
                " tokens of 1 byte = ", kHeaderBytes + count_, " bytes");
  std::vector<uint8_t> raw(size_t(std::min<int64_t>(count_, kScanTokens)));
  for (int64_t first = 0; first < count_; first += kScanTokens) {
    const int64_t n = std::min<int64_t>(kScanTokens, count_ - first);
    if (pread_full(mask_fd_, path, raw.data(), size_t(n), kHeaderBytes + first) < size_t(n))
      fail_changed_size(mask_fd_, path, "mask bytes", kHeaderBytes + first + n);
    mask_crc_ = crc32c(raw.data(), size_t(n), mask_crc_);
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t byte = raw[size_t(i)];
      TESSERA_CHECK(byte <= max_byte, "loss mask ", path, ": value ", int(byte), " at position ",
                    first + i, " is not one a version ", mask_version_, " mask holds (0 to ",
                    int(max_byte), ")");
      TESSERA_CHECK(!(byte & kMaskPairStart) || (byte & kMaskExampleStart), "loss mask ", path,
                    ": value ", int(byte), " at position ", first + i,
                    " marks a pair start (4) on a token that starts no example (2)");
      mask_scored_ += byte & kMaskScored;
      if (byte & kMaskExampleStart) example_starts_.push_back(first + i);
      if (byte & kMaskPairStart) pair_starts_.push_back(first + i);
    }
  }
}

void Shard::read_mask(int64_t start, int64_t n, uint8_t* out) const {
  TESSERA_CHECK(has_loss_mask(), "shard ", path_, " has no loss mask (", loss_mask_path(path_),
                ")");
  TESSERA_CHECK(start >= 0 && n >= 0 && start + n <= count_, "loss mask ", mask_path_,
                ": cannot read [", start, ", ", start + n, ") of ", count_);
  if (n == 0) return;
  const int64_t offset = kHeaderBytes + start;
  if (pread_full(mask_fd_, mask_path_, out, size_t(n), offset) < size_t(n))
    fail_changed_size(
        mask_fd_, mask_path_,
        "mask bytes [" + std::to_string(start) + ", " + std::to_string(start + n) + ")",
        offset + n);
  const uint8_t max_byte = max_mask_byte(mask_version_);
  for (int64_t i = 0; i < n; ++i) {
    TESSERA_CHECK(out[i] <= max_byte, "loss mask ", mask_path_,
                  " changed while it was being read: value ", int(out[i]), " at position ",
                  start + i, " is not one a version ", mask_version_,
                  " mask holds (was it rewritten in place?)");
    out[i] &= kMaskScored;
  }
}

Shard::Shard(const std::string& path, int64_t vocab_size, ShardFormat format)
    : path_(path), vocab_size_(vocab_size) {
  TESSERA_CHECK(vocab_size > 0, "shard ", path, ": vocab_size must be positive, got ", vocab_size);
  fd_ = open_shard(path);
  // From here on the destructor will not run if we throw, so close by hand on any failure.
  try {
    const int64_t file_bytes = current_size(fd_, path);
    if (format == ShardFormat::RawU16) {
      TESSERA_CHECK(file_bytes % 2 == 0, "raw uint16 shard ", path, " has an odd size of ",
                    file_bytes, " bytes (truncated?)");
      token_bytes_ = 2;
      count_ = file_bytes / 2;
      data_offset_ = 0;
    } else {
      TESSERA_CHECK(file_bytes >= kHeaderBytes, "shard ", path, " is ", file_bytes,
                    " bytes, shorter than the ", kHeaderBytes, "-byte header");
      int32_t header[4];
      if (pread_full(fd_, path, header, sizeof(header), 0) < sizeof(header))
        fail_changed_size(fd_, path, "the header's first 4 ints", sizeof(header));
      if (header[0] == kShardMagicU16) {
        TESSERA_CHECK(header[1] == kShardVersionU16, "shard ", path, ": unknown version ",
                      header[1], " for magic ", kShardMagicU16, " (expected ", kShardVersionU16,
                      ")");
        token_bytes_ = 2;
      } else if (header[0] == kShardMagicU32) {
        TESSERA_CHECK(header[1] == kShardVersionU32, "shard ", path, ": unknown version ",
                      header[1], " for magic ", kShardMagicU32, " (expected ", kShardVersionU32,
                      ")");
        token_bytes_ = 4;
      } else {
        TESSERA_FAIL("shard ", path, ": wrong magic ", header[0], " (expected ", kShardMagicU16,
                     " for uint16 tokens or ", kShardMagicU32,
                     " for uint32; a headerless nanoGPT file needs format RawU16)");
      }
      TESSERA_CHECK(header[2] >= 0, "shard ", path, ": negative token count ", header[2]);
      TESSERA_CHECK(header[3] >= 0, "shard ", path, ": negative vocabulary ", header[3],
                    " in the header's int 3");
      count_ = header[2];
      written_vocab_ = header[3];
      const int64_t expected = kHeaderBytes + count_ * token_bytes_;
      TESSERA_CHECK(file_bytes == expected, "shard ", path,
                    " is truncated or oversized: the file has ", file_bytes,
                    " bytes but its header says ", count_, " tokens of ", token_bytes_,
                    " bytes = ", expected, " bytes");
      data_offset_ = kHeaderBytes;
    }
    // One pass over the tokens now: a bad id is reported at open with its position (uint16 ids
    // cannot exceed a vocabulary of 65536 or more: no check then), and the CRC-32C of the token
    // bytes is what ranks compare to know they read the same data (train/rank_agreement.h).
    std::vector<unsigned char> raw(size_t(std::min<int64_t>(count_, kScanTokens) * token_bytes_));
    const bool check_ids = !(token_bytes_ == 2 && vocab_size >= 65536);
    for (int64_t first = 0; first < count_; first += kScanTokens) {
      const int64_t n = std::min<int64_t>(kScanTokens, count_ - first);
      const size_t bytes = size_t(n * token_bytes_);
      const int64_t offset = data_offset_ + first * token_bytes_;
      if (pread_full(fd_, path, raw.data(), bytes, offset) < bytes)
        fail_changed_size(
            fd_, path, "tokens [" + std::to_string(first) + ", " + std::to_string(first + n) + ")",
            offset + int64_t(bytes));
      crc_ = crc32c(raw.data(), bytes, crc_);
      for (int64_t i = 0; check_ids && i < n; ++i) {
        uint32_t id = 0;  // little-endian, as written
        std::memcpy(&id, raw.data() + i * token_bytes_, size_t(token_bytes_));
        TESSERA_CHECK(int64_t(id) < vocab_size, "shard ", path, ": token id ", id, " at position ",
                      first + i, " is not below the vocabulary size ", vocab_size);
      }
    }
    if (format == ShardFormat::Header) {
      const std::string mask = loss_mask_path(path);
      std::error_code ec;
      if (mask != path && std::filesystem::exists(mask, ec)) open_mask(mask);
    }
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    if (mask_fd_ >= 0) ::close(mask_fd_);
    mask_fd_ = -1;
    throw;
  }
}

void Shard::read_tokens(int64_t start, int64_t n, uint32_t* out) const {
  // The raw tokens land at the front of out; uint16 ones are then widened in place from the back
  // (out[i] overlaps only raw tokens 2i and 2i + 1, which are widened already, or, for i = 0, the
  // one being widened).
  auto* raw = reinterpret_cast<unsigned char*>(out);
  const size_t bytes = size_t(n) * size_t(token_bytes_);
  const int64_t offset = data_offset_ + start * token_bytes_;
  if (pread_full(fd_, path_, raw, bytes, offset) < bytes)
    fail_changed_size(fd_, path_,
                      "tokens [" + std::to_string(start) + ", " + std::to_string(start + n) + ")",
                      offset + int64_t(bytes));
  if (token_bytes_ == 2) {
    for (int64_t i = n - 1; i >= 0; --i) {
      uint16_t v;
      std::memcpy(&v, raw + 2 * i, sizeof(v));
      out[i] = v;
    }
  }
}

void Shard::read(int64_t start, int64_t n, uint32_t* out) const {
  TESSERA_CHECK(start >= 0 && n >= 0 && start + n <= count_, "shard ", path_,
                ": cannot read tokens [", start, ", ", start + n, ") of ", count_);
  if (n == 0) return;
  read_tokens(start, n, out);
  // Checked at open, checked again: a shard rewritten in place would otherwise hand the embedding
  // an id past its table. One compare per token read costs nothing next to the model.
  for (int64_t i = 0; i < n; ++i)
    TESSERA_CHECK(int64_t(out[i]) < vocab_size_, "shard ", path_,
                  " changed while it was being read: token id ", out[i], " at position ", start + i,
                  " is not below the vocabulary size ", vocab_size_,
                  " (it was when the shard was opened; was it rewritten in place?)");
}

std::vector<uint32_t> Shard::read(int64_t start, int64_t n) const {
  std::vector<uint32_t> out(size_t(std::max<int64_t>(n, 0)));
  read(start, n, out.data());
  return out;
}

Shard::~Shard() {
  if (fd_ >= 0) ::close(fd_);
  if (mask_fd_ >= 0) ::close(mask_fd_);
}

Shard::Shard(Shard&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      data_offset_(std::exchange(other.data_offset_, 0)),
      count_(std::exchange(other.count_, 0)),
      vocab_size_(std::exchange(other.vocab_size_, 0)),
      written_vocab_(std::exchange(other.written_vocab_, 0)),
      token_bytes_(other.token_bytes_),
      crc_(other.crc_),
      mask_path_(std::move(other.mask_path_)),
      mask_fd_(std::exchange(other.mask_fd_, -1)),
      mask_version_(other.mask_version_),
      mask_scored_(other.mask_scored_),
      mask_crc_(other.mask_crc_),
      example_starts_(std::move(other.example_starts_)),
      pair_starts_(std::move(other.pair_starts_)) {}

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    if (mask_fd_ >= 0) ::close(mask_fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    data_offset_ = std::exchange(other.data_offset_, 0);
    count_ = std::exchange(other.count_, 0);
    vocab_size_ = std::exchange(other.vocab_size_, 0);
    written_vocab_ = std::exchange(other.written_vocab_, 0);
    token_bytes_ = other.token_bytes_;
    crc_ = other.crc_;
    mask_path_ = std::move(other.mask_path_);
    mask_fd_ = std::exchange(other.mask_fd_, -1);
    mask_version_ = other.mask_version_;
    mask_scored_ = other.mask_scored_;
    mask_crc_ = other.mask_crc_;
    example_starts_ = std::move(other.example_starts_);
    pair_starts_ = std::move(other.pair_starts_);
  }
  return *this;
}

}  // namespace tessera::data
