// Token shards: writing through a temporary file, reading through a read-only mmap.
//
// Invariants:
//  - A shard under its final name is always complete: write_shard writes `path.tmp`, fsyncs it,
//    renames it over `path` and fsyncs the directory (rename is atomic on POSIX file systems).
//  - An open Shard has been fully validated (magic, version, exact size, every id < vocab_size), so
//    operator[] needs no checks and a corrupt file fails at open, naming the file, never mid-training.
//  - Tokens are stored little-endian, as llm.c writes them; like llm.c we assume a little-endian host.
#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "core/error.h"

namespace tessera::data {
namespace {

constexpr int64_t kHeaderBytes = kShardHeaderInts * int64_t(sizeof(int32_t));  // 1024

std::string errno_str() { return std::strerror(errno); }

// Writes all n bytes (write(2) may stop short, e.g. on signals or large buffers).
void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    TESSERA_CHECK(w > 0, "write_shard: writing ", path, " failed: ", errno_str());
    p += w;
    n -= size_t(w);
  }
}

// fsync of the directory makes the rename itself durable (REFERENCES.md, crash safety).
void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some file systems do not let a directory be opened
  ::fsync(fd);
  ::close(fd);
}

template <typename T>
std::vector<T> narrow_tokens(const std::vector<uint32_t>& tokens) {
  return std::vector<T>(tokens.begin(), tokens.end());
}

}  // namespace

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int64_t vocab_size) {
  TESSERA_CHECK(vocab_size > 0 && vocab_size <= (int64_t(1) << 32), "write_shard: ", path,
                ": vocab_size must be in [1, 2^32], got ", vocab_size);
  TESSERA_CHECK(tokens.size() <= size_t(std::numeric_limits<int32_t>::max()), "write_shard: ", path,
                ": ", tokens.size(), " tokens do not fit the header's int32 count (split the shard)");
  for (size_t i = 0; i < tokens.size(); ++i)
    TESSERA_CHECK(int64_t(tokens[i]) < vocab_size, "write_shard: ", path, ": token id ", tokens[i],
                  " at position ", i, " is not below the vocabulary size ", vocab_size);

  const bool u16 = vocab_size <= 65536;
  int32_t header[kShardHeaderInts] = {};
  header[0] = u16 ? kShardMagicU16 : kShardMagicU32;
  header[1] = u16 ? kShardVersionU16 : kShardVersionU32;
  header[2] = int32_t(tokens.size());

  const std::filesystem::path final_path(path);
  std::error_code ec;
  if (final_path.has_parent_path()) {
    std::filesystem::create_directories(final_path.parent_path(), ec);
    TESSERA_CHECK(!ec, "write_shard: cannot create the directory ", final_path.parent_path().string(),
                  " for ", path, ": ", ec.message());
  }

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TESSERA_CHECK(fd >= 0, "write_shard: cannot create ", tmp, ": ", errno_str());
  try {
    write_all(fd, header, sizeof(header), tmp);
    if (u16) {
      std::vector<uint16_t> narrow = narrow_tokens<uint16_t>(tokens);
      write_all(fd, narrow.data(), narrow.size() * sizeof(uint16_t), tmp);
    } else {
      write_all(fd, tokens.data(), tokens.size() * sizeof(uint32_t), tmp);
    }
    TESSERA_CHECK(::fsync(fd) == 0, "write_shard: fsync of ", tmp, " failed: ", errno_str());
    TESSERA_CHECK(::close(fd) == 0, "write_shard: closing ", tmp, " failed: ", errno_str());
    fd = -1;
    TESSERA_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "write_shard: renaming ", tmp, " to ",
                  path, " failed: ", errno_str());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());  // leave nothing half-written behind; the final name was never touched
    throw;
  }
  fsync_dir(final_path.parent_path());
}

Shard::Shard(const std::string& path, int64_t vocab_size, ShardFormat format) : path_(path) {
  TESSERA_CHECK(vocab_size > 0, "shard ", path, ": vocab_size must be positive, got ", vocab_size);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TESSERA_CHECK(fd >= 0, "cannot open shard ", path, ": ", errno_str());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string why = errno_str();
    ::close(fd);
    TESSERA_FAIL("cannot stat shard ", path, ": ", why);
  }
  const int64_t file_bytes = int64_t(st.st_size);
  // mmap of zero bytes is an error, and an empty raw file is a valid (empty) shard.
  if (file_bytes > 0) {
    map_ = ::mmap(nullptr, size_t(file_bytes), PROT_READ, MAP_SHARED, fd, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      std::string why = errno_str();
      ::close(fd);
      TESSERA_FAIL("cannot mmap shard ", path, " (", file_bytes, " bytes): ", why);
    }
    map_bytes_ = size_t(file_bytes);
  }
  ::close(fd);  // the mapping keeps the file alive

  // From here on the destructor will not run if we throw, so unmap by hand on any failure.
  try {
    if (format == ShardFormat::RawU16) {
      TESSERA_CHECK(file_bytes % 2 == 0, "raw uint16 shard ", path, " has an odd size of ",
                    file_bytes, " bytes (truncated?)");
      token_bytes_ = 2;
      count_ = file_bytes / 2;
      tokens_ = map_;
    } else {
      TESSERA_CHECK(file_bytes >= kHeaderBytes, "shard ", path, " is ", file_bytes,
                    " bytes, shorter than the ", kHeaderBytes, "-byte header");
      int32_t header[3];
      std::memcpy(header, map_, sizeof(header));
      if (header[0] == kShardMagicU16) {
        TESSERA_CHECK(header[1] == kShardVersionU16, "shard ", path, ": unknown version ", header[1],
                      " for magic ", kShardMagicU16, " (expected ", kShardVersionU16, ")");
        token_bytes_ = 2;
      } else if (header[0] == kShardMagicU32) {
        TESSERA_CHECK(header[1] == kShardVersionU32, "shard ", path, ": unknown version ", header[1],
                      " for magic ", kShardMagicU32, " (expected ", kShardVersionU32, ")");
        token_bytes_ = 4;
      } else {
        TESSERA_FAIL("shard ", path, ": wrong magic ", header[0], " (expected ", kShardMagicU16,
                     " for uint16 tokens or ", kShardMagicU32,
                     " for uint32; a headerless nanoGPT file needs format RawU16)");
      }
      TESSERA_CHECK(header[2] >= 0, "shard ", path, ": negative token count ", header[2]);
      count_ = header[2];
      const int64_t expected = kHeaderBytes + count_ * token_bytes_;
      TESSERA_CHECK(file_bytes == expected, "shard ", path, " is truncated or oversized: the file has ",
                    file_bytes, " bytes but its header says ", count_, " tokens of ", token_bytes_,
                    " bytes = ", expected, " bytes");
      tokens_ = static_cast<const char*>(map_) + kHeaderBytes;
    }
    // One pass over the ids now (reading, not copying) so a bad id is reported at open with its
    // position; uint16 ids cannot exceed a vocabulary of 65536 or more, so that scan is skipped.
    if (!(token_bytes_ == 2 && vocab_size >= 65536)) {
      for (int64_t i = 0; i < count_; ++i) {
        uint32_t id = (*this)[i];
        TESSERA_CHECK(int64_t(id) < vocab_size, "shard ", path, ": token id ", id, " at position ",
                      i, " is not below the vocabulary size ", vocab_size);
      }
    }
  } catch (...) {
    if (map_) ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw;
  }
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      tokens_(std::exchange(other.tokens_, nullptr)),
      count_(std::exchange(other.count_, 0)),
      token_bytes_(other.token_bytes_) {}

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    count_ = std::exchange(other.count_, 0);
    token_bytes_ = other.token_bytes_;
  }
  return *this;
}

}  // namespace tessera::data
